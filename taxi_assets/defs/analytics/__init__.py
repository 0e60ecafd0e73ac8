"""dbt over the warehouse: its models as assets, and the revenue chart."""
