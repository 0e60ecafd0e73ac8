{#
  The run's days: Dagster passes its partition window as vars `min_date` (inclusive) and
  `max_date` (exclusive). Without them every day is built.
#}
{% macro in_day_window(date_column) -%}
    {%- if var('min_date') and var('max_date') -%}
        {{ date_column }} >= date '{{ var("min_date") }}'
        and {{ date_column }} < date '{{ var("max_date") }}'
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{#
  How fct_trips replaces a run's days, by adapter: DuckDB deletes the days the new rows hold
  and inserts them in one transaction; BigQuery overwrites those days' partitions.
#}
{% macro by_day_incremental_config() -%}
    {%- if target.type == 'bigquery' -%}
        {{ return({
            'incremental_strategy': 'insert_overwrite',
            'partition_by': {'field': 'pickup_date', 'data_type': 'date', 'granularity': 'day'},
        }) }}
    {%- else -%}
        {{ return({'incremental_strategy': 'delete+insert', 'unique_key': 'pickup_date'}) }}
    {%- endif -%}
{%- endmacro %}

{% macro payment_type_description(payment_type) -%}
    case cast({{ payment_type }} as {{ dbt.type_bigint() }})
        when 0 then 'Flex fare'
        when 1 then 'Credit card'
        when 2 then 'Cash'
        when 3 then 'No charge'
        when 4 then 'Dispute'
        when 5 then 'Unknown'
        when 6 then 'Voided trip'
        else 'EMPTY'
    end
{%- endmacro %}
