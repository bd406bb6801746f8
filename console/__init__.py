"""The web console (``dnsflow console``) and the terminal tail (``dnsflow tail``)."""
