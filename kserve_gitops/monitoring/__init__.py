"""SLO monitoring generated from config/slo.yaml: alert rules, Grafana dashboards, promtool."""
