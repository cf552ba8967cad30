# A production install: three replicas and an autoscaler on PostgreSQL behind an nginx ingress,
# the database password and the session key from Secrets created beforehand, e.g.
#
#   kubectl -n portcullis create secret generic portcullis-db --from-file=password=./db-password
#   kubectl -n portcullis create secret generic portcullis-session --from-file=session-key=./session-key

terraform {
  required_version = ">= 1.5"
}

provider "helm" {
  kubernetes = {
    config_path = "~/.kube/config"
  }
}

module "portcullis" {
  source = "../.."

  image_repository         = "registry.example.com/portcullis"
  image_digest             = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
  public_url               = "https://mcp.example.com"
  replicas                 = 3
  postgres_url             = "postgres://portcullis@db.internal:5432/portcullis?sslmode=verify-full"
  postgres_password_secret = "portcullis-db"
  session_key_secret       = "portcullis-session"
  ingress_class            = "nginx"
  autoscaling              = { min_replicas = 3, max_replicas = 10, cpu_percent = 70 }

  gateway_config = {
    profile   = "production"
    approvals = { required_from = "write" }
    servers = {
      notes = {
        builtin = "notes"
        tools = {
          search_notes = { class = "read" }
          create_note  = { class = "write", rate = "10/min" }
        }
      }
    }
    grants = { "team:platform" = ["notes/*"] }
  }
}

output "mcp_url" {
  description = "Where agents connect."
  value       = module.portcullis.mcp_url
}
