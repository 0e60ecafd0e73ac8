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
  How fct_trips replaces a run's days, by adapter, every day of the window, a day whose trips
  all went too: DuckDB deletes the window's days and appends the new rows in one transaction
  (the pre-hook runs inside the model's); BigQuery overwrites the window's day partitions,
  named statically so that an empty day is overwritten as well. Without a window, every day
  with rows is replaced.
#}
{% macro by_day_incremental_config() -%}
    {%- if target.type == 'bigquery' -%}
        {%- set days = [] -%}
        {%- if var('min_date') and var('max_date') -%}
            {%- set first = modules.datetime.date.fromisoformat(var('min_date')) -%}
            {%- set end = modules.datetime.date.fromisoformat(var('max_date')) -%}
            {%- for offset in range((end - first).days) -%}
                {%- do days.append("date '" ~ (first + modules.datetime.timedelta(days=offset)) ~ "'") -%}
            {%- endfor -%}
        {%- endif -%}
        {{ return({
            'incremental_strategy': 'insert_overwrite',
            'partition_by': {'field': 'pickup_date', 'data_type': 'date', 'granularity': 'day'},
            'partitions': days or none,
        }) }}
    {%- else -%}
        {{ return({
            'incremental_strategy': 'append',
            'pre_hook': "{% if is_incremental() %}delete from {{ this }} where "
                ~ "{{ in_day_window('pickup_date') }}{% endif %}",
        }) }}
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
