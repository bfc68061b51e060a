"""Triggers the provider's deferrable operators wait in (run by Airflow's triggerer)."""
