output "release_name" {
  description = "Name of the Helm release."
  value       = helm_release.portcullis.name
}

output "namespace" {
  description = "Namespace the gateway runs in."
  value       = helm_release.portcullis.namespace
}

output "status" {
  description = "Status of the release (deployed when every pod is ready)."
  value       = helm_release.portcullis.status
}

output "mcp_url" {
  description = "The federated MCP endpoint clients connect to."
  value       = "${var.public_url}/mcp"
}
