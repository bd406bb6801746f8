"""Where policy documents come from: a YAML directory, the Kubernetes API."""
