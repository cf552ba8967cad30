variable "release_name" {
  description = "Name of the Helm release (and prefix of its Kubernetes objects)."
  type        = string
  default     = "portcullis"
}

variable "namespace" {
  description = "Namespace to install into; created when it does not exist."
  type        = string
  default     = "portcullis"
}

variable "chart_path" {
  description = "Path to the chart or a chart reference; null: this repository's helm/portcullis."
  type        = string
  default     = null
}

variable "image_repository" {
  description = "Container image repository of the gateway (built from deploy/Dockerfile)."
  type        = string
}

variable "image_digest" {
  description = "Image digest (sha256:...) that pins the image exactly."
  type        = string

  validation {
    condition     = can(regex("^sha256:[0-9a-f]{64}$", var.image_digest))
    error_message = "The image digest must be sha256: followed by 64 hex digits."
  }
}

variable "public_url" {
  description = "The URL clients use to reach the gateway, e.g. https://mcp.example.com."
  type        = string

  validation {
    condition     = can(regex("^https://[^/]+$", var.public_url))
    error_message = "The public URL must be https://HOST with no path."
  }
}

variable "replicas" {
  description = "Replicas; more than one needs a PostgreSQL store (postgres_url)."
  type        = number
  default     = 1

  validation {
    condition     = var.replicas >= 1
    error_message = "At least one replica."
  }
}

variable "postgres_url" {
  description = "postgres://USER@HOST:PORT/DB?sslmode=verify-full, without a password; null for SQLite on a volume (one replica)."
  type        = string
  default     = null

  validation {
    condition     = var.postgres_url == null || can(regex("^postgres(ql)?://[^:@/]+@[^/]+/.+$", var.postgres_url))
    error_message = "The PostgreSQL URL names a user and no password: postgres://USER@HOST:PORT/DB."
  }
}

variable "postgres_password_secret" {
  description = "Name of the Secret (key `password`) holding the database password."
  type        = string
  default     = null
}

variable "session_key_secret" {
  description = "Name of the Secret (key `session-key`) with 32+ random bytes that seal session ids; null: a key kept in the store."
  type        = string
  default     = null
}

variable "gateway_config" {
  description = "The rest of portcullis.yaml (servers, identity, grants, approvals, limits, audit, telemetry) as an object."
  type        = any
}

variable "allowed_namespaces" {
  description = "Namespaces whose pods may reach the MCP port (the ingress controller's, the agents')."
  type        = list(string)
  default     = ["ingress-nginx"]
}

variable "ingress_class" {
  description = "Ingress class for the public host; null: no Ingress."
  type        = string
  default     = null
}

variable "autoscaling" {
  description = "Autoscaler bounds (needs PostgreSQL); null: a fixed number of replicas."
  type = object({
    min_replicas = number
    max_replicas = number
    cpu_percent  = number
  })
  default = null
}
