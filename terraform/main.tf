# Portcullis through its Helm chart. Every input is typed and documented in variables.tf; the
# chart validates the values it receives against its values.schema.json as well.

locals {
  postgres = var.postgres_url != null
  values = {
    replicaCount = var.replicas
    publicUrl    = var.public_url
    image = {
      repository = var.image_repository
      digest     = var.image_digest
      pullPolicy = "Always"
    }
    store = {
      postgres = {
        enabled        = local.postgres
        url            = local.postgres ? var.postgres_url : ""
        passwordSecret = { name = var.postgres_password_secret == null ? "" : var.postgres_password_secret, key = "password" }
      }
    }
    sessionKeySecret = { name = var.session_key_secret == null ? "" : var.session_key_secret, key = "session-key" }
    config           = var.gateway_config
    networkPolicy    = { enabled = true, allowedNamespaces = var.allowed_namespaces }
    ingress = {
      enabled   = var.ingress_class != null
      className = var.ingress_class == null ? "" : var.ingress_class
    }
    # One shape whether or not it is set (a conditional's two objects must unify).
    autoscaling = {
      enabled                        = var.autoscaling != null
      minReplicas                    = try(var.autoscaling.min_replicas, 2)
      maxReplicas                    = try(var.autoscaling.max_replicas, 6)
      targetCPUUtilizationPercentage = try(var.autoscaling.cpu_percent, 70)
    }
  }
}

resource "helm_release" "portcullis" {
  name             = var.release_name
  namespace        = var.namespace
  create_namespace = true
  chart            = coalesce(var.chart_path, "${path.module}/../helm/portcullis")
  atomic           = true
  wait             = true
  timeout          = 300
  values           = [yamlencode(local.values)]
}
