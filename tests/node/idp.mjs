// idp.mjs: a real OpenID Connect provider (panva's `oidc-provider`) for
// Portcullis end-to-end tests. TEST FIXTURE ONLY: never run it anywhere else.
//
// Usage (Node >= 22; oidc-provider warns on older runtimes):
//
//   node idp.mjs [--port N]
//
// It binds 127.0.0.1 (port N, or an ephemeral port when --port is absent or
// 0), and when ready prints exactly one line of JSON to stdout:
//
//   {"issuer":"http://127.0.0.1:PORT","jwks_uri":"http://127.0.0.1:PORT/jwks","token_endpoint":"http://127.0.0.1:PORT/token"}
//
// Everything else goes to stderr. It exits when stdin reaches EOF (when stdin
// is a pipe or a terminal; /dev/null is ignored) or on SIGTERM/SIGINT.
//
// Signing keys: one RS256 key (kid "rs256-<random>") and one ES256 key
// (kid "es256-<random>") are generated at start-up and published at
// jwks_uri. Provider-issued access tokens are signed with the RS256 key.
//
// Clients (client_credentials grant only; the secret may be sent either as
// form fields client_id/client_secret or as HTTP Basic):
//
//   agent-acme      / agent-acme-secret      -> org "acme",   groups ["research"]
//   agent-other     / agent-other-secret     -> org "globex", groups ["sales"]
//   agent-badclaim  / agent-badclaim-secret  -> org 42 (a number, malformed on purpose), groups ["research"]
//
// The gateway's own client, for upstream credentials (HTTP Basic only):
//
//   portcullis-gw   / portcullis-gw-secret   grants client_credentials and RFC 8693 token exchange
//   portcullis-gw-jwt  the same grants, authenticating with private_key_jwt (RFC 7523, RS256);
//                      its private key (PKCS#8 PEM): GET /test/client-key
//
// Token exchange (grant_type=urn:ietf:params:oauth:grant-type:token-exchange,
// RFC 8693 §2.1): subject_token must be an access token this provider signed
// (subject_token_type ...:access_token), `audience` names the upstream (any
// name but "forbidden-api", which is refused with invalid_target). The issued
// JWT has sub = the subject token's sub, aud = the audience, scope = the
// requested scopes (default: the subject's) that the subject token also has,
// act = {sub: <the client id>}, and the subject's org and groups; the answer
// is {access_token, issued_token_type, token_type: "Bearer", expires_in, scope}.
// Every exchange is counted: GET /test/exchanges -> {"count": N, "last_scope":
// the scope the last exchange asked for}. For fault
// injection, POST /test/exchange-mode {"mode": "ok" | "slow" | "error"}: slow
// holds each exchange 10 s before answering, error answers invalid_grant.
//
// Token request (resource indicators, RFC 8707; the token is a JWT, RFC 9068):
//
//   curl -s -X POST "$ISSUER/token" \
//     -d grant_type=client_credentials -d client_id=agent-acme \
//     -d client_secret=agent-acme-secret \
//     -d resource=http://127.0.0.1:8080 -d scope=mcp
//
// Any http://127.0.0.1:<port>[/path] resource is accepted; the token's `aud`
// is exactly the resource string as sent (a string, not an array). Allowed
// scopes for the resource: "mcp" and "mcp:admin" (others are dropped). The
// JWT header is {"alg":"RS256","typ":"at+jwt","kid":...}; the payload has
// jti, sub (= client id), iat, exp (iat + 300), scope, client_id, iss, aud,
// org, groups. There is no nbf and no azp.
//
// TEST-ONLY minting endpoint, served on the same port, for deliberately bad
// tokens that a real provider would never issue:
//
//   POST /test/mint   {"kind": K, "aud": "...", "claims": {...}}  ->  {"token": "..."}
//
// The base payload is {iss: issuer, aud, iat: now, nbf: now, exp: now + 300,
// jti}; the kind then adjusts it, and `claims` is merged last (it may override
// anything). `aud` is required except for kind wrong_audience. Kinds:
//
//   valid                RS256 with the provider's real key and kid
//   expired              exp = now - 600, iat = nbf = now - 900
//   not_yet_valid        nbf = now + 600
//   wrong_issuer         iss = http://127.0.0.1:1/other
//   wrong_audience       aud = http://127.0.0.1:1/elsewhere
//   unknown_kid          RS256 with a fresh key whose kid is not in the JWKS
//   alg_none             header {"alg":"none","typ":"JWT","kid":<real RS kid>}, empty signature
//   alg_hs256_confusion  HS256, HMAC secret = the RS256 public key as SPKI PEM
//                        (the exact string, "-----BEGIN PUBLIC KEY-----\n...-----END PUBLIC KEY-----\n"), real RS kid
//   es256                ES256 with the provider's real ES256 key and kid (a valid token)
//   bad_signature        a valid token whose last signature byte has one bit flipped
//
// Signed kinds other than alg_none use header typ "at+jwt", like the provider's own tokens.
//
//   GET /test/keys       {"rs256_kid": "...", "es256_kid": "..."} (diagnostics)

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import { exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import Provider, { errors as oidcErrors } from 'oidc-provider';

// oidc-provider prints its notices with console.info (stdout). stdout is
// reserved for the single ready line, so route console output to stderr.
for (const method of ['log', 'info', 'debug']) {
  console[method] = (...args) => console.error(...args);
}

function parsePort(argv) {
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    let value;
    if (arg === '--port') {
      value = argv[i + 1];
      i += 1;
    } else if (arg.startsWith('--port=')) {
      value = arg.slice('--port='.length);
    } else {
      throw new Error(`unknown argument: ${arg}`);
    }
    const port = Number(value);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new Error(`invalid --port value: ${value}`);
    }
    return port;
  }
  return 0;
}

const CLIENT_CLAIMS = {
  'agent-acme': { org: 'acme', groups: ['research'] },
  'agent-other': { org: 'globex', groups: ['sales'] },
  'agent-badclaim': { org: 42, groups: ['research'] },
};

const RESOURCE_SCOPES = 'mcp mcp:admin';
const EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
let exchanges = 0;
let exchangeMode = 'ok';
let lastScope = null;
const ACCESS_TOKEN_TTL = 300;

function isLoopbackResource(resource) {
  const url = URL.parse(resource);
  return url !== null
    && url.protocol === 'http:'
    && url.hostname === '127.0.0.1'
    && url.username === ''
    && url.password === '';
}

async function makeSigningKey(alg, kid) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
  return { alg, kid, publicKey, privateKey, privateJwk };
}

const b64url = (input) => Buffer.from(input).toString('base64url');
const randomId = () => crypto.randomBytes(8).toString('hex');

async function main() {
  const requestedPort = parsePort(process.argv.slice(2));

  const rsKey = await makeSigningKey('RS256', `rs256-${randomId()}`);
  const esKey = await makeSigningKey('ES256', `es256-${randomId()}`);
  const rsPublicPem = crypto.KeyObject.from(rsKey.publicKey)
    .export({ type: 'spki', format: 'pem' });
  const gwKey = await makeSigningKey('RS256', `gw-${randomId()}`);
  const gwPrivatePem = crypto.KeyObject.from(gwKey.privateKey)
    .export({ type: 'pkcs8', format: 'pem' });
  const gwPublicJwk = { ...(await exportJWK(gwKey.publicKey)), kid: gwKey.kid, alg: 'RS256', use: 'sig' };

  // Bind first, then build the provider with the real port: no port race.
  let providerCallback;
  let issuer;
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path.startsWith('/test/')) {
      handleTest(req, res, path).catch((err) => {
        console.error('idp: /test/ handler error:', err);
        if (!res.headersSent) sendJson(res, 500, { error: String(err?.message ?? err) });
        else res.end();
      });
      return;
    }
    if (!providerCallback) {
      sendJson(res, 503, { error: 'starting' });
      return;
    }
    providerCallback(req, res);
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(requestedPort, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;

  const clients = Object.keys(CLIENT_CLAIMS).map((clientId) => ({
    client_id: clientId,
    client_secret: `${clientId}-secret`,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_post',
    scope: RESOURCE_SCOPES,
  }));
  clients.push({
    client_id: 'portcullis-gw',
    client_secret: 'portcullis-gw-secret',
    grant_types: ['client_credentials', EXCHANGE_GRANT],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: RESOURCE_SCOPES,
  });
  clients.push({
    client_id: 'portcullis-gw-jwt',
    grant_types: ['client_credentials', EXCHANGE_GRANT],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'RS256',
    jwks: { keys: [gwPublicJwk] },
    scope: RESOURCE_SCOPES,
  });

  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [rsKey.privateJwk, esKey.privateJwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'mcp', 'mcp:admin'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (!isLoopbackResource(resourceIndicator)) {
            throw new oidcErrors.InvalidTarget(
              'this test provider only serves http://127.0.0.1:* resources',
            );
          }
          return {
            scope: RESOURCE_SCOPES,
            audience: resourceIndicator,
            accessTokenTTL: ACCESS_TOKEN_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // Custom claims keyed off the client id. oidc-provider already sets
    // sub = client_id for client_credentials JWTs (registered claims win
    // over these), so sub is only a fallback here.
    extraTokenClaims: async (_ctx, token) => {
      const claims = CLIENT_CLAIMS[token.clientId];
      if (!claims) return undefined;
      return { sub: token.clientId, ...structuredClone(claims) };
    },
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
    },
    clientBasedCORS: () => false,
  });
  // RFC 8693 token exchange: the gateway (authenticated by the provider as the client) trades
  // a caller's access token for one issued to an upstream, naming itself as the actor.
  provider.registerGrantType(EXCHANGE_GRANT, async (ctx) => {
    const params = ctx.oidc.params;
    const client = ctx.oidc.client;
    if (exchangeMode === 'slow') await new Promise((resolve) => { setTimeout(resolve, 10000); });
    if (exchangeMode === 'error') throw new oidcErrors.InvalidGrant('exchange refused (test mode)');
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new oidcErrors.InvalidRequest('subject_token_type must be an access token');
    }
    let subject;
    try {
      ({ payload: subject } = await jwtVerify(params.subject_token, rsKey.publicKey, { issuer }));
    } catch (err) {
      throw new oidcErrors.InvalidGrant(`subject_token: ${err.code ?? err.message}`);
    }
    const audience = params.audience ?? params.resource;
    if (!audience || audience === 'forbidden-api') {
      throw new oidcErrors.InvalidTarget('this audience is not served');
    }
    const held = String(subject.scope ?? '').split(' ').filter(Boolean);
    lastScope = params.scope ?? null;
    const asked = params.scope ? params.scope.split(' ').filter(Boolean) : held;
    const scope = asked.filter((s) => held.includes(s)).join(' ');
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: issuer,
      sub: subject.sub,
      aud: audience,
      iat: now,
      exp: now + ACCESS_TOKEN_TTL,
      jti: randomId(),
      client_id: client.clientId,
      scope,
      act: { sub: client.clientId },
    };
    for (const k of ['org', 'groups']) if (subject[k] !== undefined) claims[k] = subject[k];
    const token = await signJws(claims, rsKey.privateKey, 'RS256', rsKey.kid);
    exchanges += 1;
    ctx.body = {
      access_token: token,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: ACCESS_TOKEN_TTL,
      scope,
    };
  }, ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'audience', 'resource', 'scope']);
  provider.on('server_error', (_ctx, err) => console.error('idp: server_error:', err));
  provider.on('grant.error', (_ctx, err) => console.error('idp: grant.error:', err.message, err.error_description ?? ''));
  providerCallback = provider.callback();

  // ---- TEST-ONLY endpoints (/test/*); a real provider must never have these.
  function sendJson(res, status, body) {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
    });
    res.end(text);
  }

  async function readJson(req) {
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
      size += chunk.length;
      if (size > 1 << 20) throw new Error('request body too large');
      chunks.push(chunk);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    return text.trim() === '' ? {} : JSON.parse(text);
  }

  async function signJws(payload, key, alg, kid) {
    return new SignJWT(payload)
      .setProtectedHeader({ alg, typ: 'at+jwt', kid })
      .sign(key);
  }

  async function mint(kind, aud, claims) {
    const now = Math.floor(Date.now() / 1000);
    const payload = {
      iss: issuer,
      aud,
      iat: now,
      nbf: now,
      exp: now + ACCESS_TOKEN_TTL,
      jti: randomId(),
    };
    const finish = () => ({ ...payload, ...claims });

    switch (kind) {
      case 'valid':
        return signJws(finish(), rsKey.privateKey, 'RS256', rsKey.kid);
      case 'expired':
        Object.assign(payload, { exp: now - 600, iat: now - 900, nbf: now - 900 });
        return signJws(finish(), rsKey.privateKey, 'RS256', rsKey.kid);
      case 'not_yet_valid':
        payload.nbf = now + 600;
        return signJws(finish(), rsKey.privateKey, 'RS256', rsKey.kid);
      case 'wrong_issuer':
        payload.iss = 'http://127.0.0.1:1/other';
        return signJws(finish(), rsKey.privateKey, 'RS256', rsKey.kid);
      case 'wrong_audience':
        payload.aud = 'http://127.0.0.1:1/elsewhere';
        return signJws(finish(), rsKey.privateKey, 'RS256', rsKey.kid);
      case 'unknown_kid': {
        const { privateKey } = await generateKeyPair('RS256');
        return signJws(finish(), privateKey, 'RS256', `unknown-${randomId()}`);
      }
      case 'alg_none': {
        const header = { alg: 'none', typ: 'JWT', kid: rsKey.kid };
        return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(finish()))}.`;
      }
      case 'alg_hs256_confusion': {
        // jose refuses to use an asymmetric key as an HMAC secret; build it by hand.
        const header = { alg: 'HS256', typ: 'at+jwt', kid: rsKey.kid };
        const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(finish()))}`;
        const mac = crypto.createHmac('sha256', rsPublicPem).update(input).digest('base64url');
        return `${input}.${mac}`;
      }
      case 'es256':
        return signJws(finish(), esKey.privateKey, 'ES256', esKey.kid);
      case 'bad_signature': {
        const token = await signJws(finish(), rsKey.privateKey, 'RS256', rsKey.kid);
        const [h, p, s] = token.split('.');
        // Flip a bit in the last signature *byte* (not just the last base64url
        // character, whose low bits may be padding that decoders ignore).
        const sig = Buffer.from(s, 'base64url');
        sig[sig.length - 1] ^= 0x01;
        return `${h}.${p}.${sig.toString('base64url')}`;
      }
      default:
        return undefined;
    }
  }

  async function handleTest(req, res, path) {
    if (path === '/test/keys' && req.method === 'GET') {
      sendJson(res, 200, { rs256_kid: rsKey.kid, es256_kid: esKey.kid });
      return;
    }
    if (path === '/test/client-key' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/x-pem-file' });
      res.end(gwPrivatePem);
      return;
    }
    if (path === '/test/exchanges' && req.method === 'GET') {
      sendJson(res, 200, { count: exchanges, last_scope: lastScope });
      return;
    }
    if (path === '/test/exchange-mode' && req.method === 'POST') {
      const { mode } = await readJson(req);
      if (!['ok', 'slow', 'error'].includes(mode)) {
        sendJson(res, 400, { error: 'mode is ok, slow or error' });
        return;
      }
      exchangeMode = mode;
      sendJson(res, 200, { mode });
      return;
    }
    if (path !== '/test/mint') {
      sendJson(res, 404, { error: 'not found' });
      return;
    }
    if (req.method !== 'POST') {
      sendJson(res, 405, { error: 'use POST' });
      return;
    }
    let body;
    try {
      body = await readJson(req);
    } catch (err) {
      sendJson(res, 400, { error: `invalid JSON body: ${err.message}` });
      return;
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      sendJson(res, 400, { error: 'body must be a JSON object' });
      return;
    }
    const { kind, aud, claims = {} } = body;
    if (typeof kind !== 'string') {
      sendJson(res, 400, { error: 'kind must be a string' });
      return;
    }
    if (aud === undefined && kind !== 'wrong_audience') {
      sendJson(res, 400, { error: 'aud is required' });
      return;
    }
    if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
      sendJson(res, 400, { error: 'claims must be a JSON object' });
      return;
    }
    const token = await mint(kind, aud, claims);
    if (token === undefined) {
      sendJson(res, 400, { error: `unknown kind: ${kind}` });
      return;
    }
    sendJson(res, 200, { token });
  }
  // ---- end of TEST-ONLY endpoints.

  const shutdown = (why) => {
    console.error(`idp: shutting down (${why})`);
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  // Exit when stdin closes, but only if stdin can close: a pipe, socket, file
  // or terminal. /dev/null (a non-terminal character device) would hit EOF at
  // once, so then rely on signals only.
  let watchStdin = true;
  try {
    const st = fs.fstatSync(0);
    if (st.isCharacterDevice() && !process.stdin.isTTY) watchStdin = false;
  } catch {
    watchStdin = false;
  }
  if (watchStdin) {
    process.stdin.on('data', () => {});
    process.stdin.on('end', () => shutdown('stdin closed'));
    process.stdin.on('error', () => shutdown('stdin error'));
    process.stdin.resume();
  }

  // Self-check through the real HTTP stack, and take the endpoint URLs from
  // the provider's own discovery document.
  const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  const ready = {
    issuer: discovery.issuer,
    jwks_uri: discovery.jwks_uri,
    token_endpoint: discovery.token_endpoint,
  };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  console.error(`idp: ready at ${issuer} (node ${process.version}; RS256 kid ${rsKey.kid}, ES256 kid ${esKey.kid})`);
}

main().catch((err) => {
  console.error('idp: fatal:', err);
  process.exit(1);
});
