"""Package layout: the checkout keeps one top-level folder per component (ARCHITECTURE.md), the
installed package nests them under ``dnsflow`` so the installed names are ``dnsflow.edge``,
``dnsflow.streams``, ... and never a bare ``edge``. The harness and benchmarks stay out."""

from setuptools import find_packages, setup

COMPONENTS = ("edge", "policies", "streams", "sinks", "console")

packages = find_packages(include=["dnsflow", "dnsflow.*"])
package_dir = {"dnsflow": "dnsflow"}
for component in COMPONENTS:
    package_dir[f"dnsflow.{component}"] = component
    packages += [f"dnsflow.{name}" for name in find_packages(include=[component, f"{component}.*"])]

setup(packages=packages, package_dir=package_dir)
