"""Test and benchmark harness: real DNS peers (unbound, dnsdist, NSD, dnsperf) and an in-process
fake upstream. Lives in the checkout only; it is not part of the installed package."""
