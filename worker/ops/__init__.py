"""Operations: Sentry, results and alerts, the balance monitor, Flower and metrics."""
