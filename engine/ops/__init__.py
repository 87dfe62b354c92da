"""Operations: logs, metrics, alerts, status, reports, diagrams and the runbook."""
