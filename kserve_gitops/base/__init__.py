"""The bottom layer: what every concern may use and that uses nothing above it."""
