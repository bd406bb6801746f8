"""L4 egress from DNS answers on the node (issue #17): see README.md."""
