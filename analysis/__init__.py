"""From pcaps to tables, metrics, figures and reports. Depends on nothing else in the repo."""
