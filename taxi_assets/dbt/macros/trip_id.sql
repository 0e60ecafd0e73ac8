{#
  A trip's surrogate id, like the course's `unique_row_id`: a hash of the columns that tell
  trips apart. `ordinal` numbers rows identical in all of them (real files hold a few), so the
  id is unique without dropping any trip. The hash and the concatenation differ by adapter.
#}
{% macro trip_id(columns) -%}
    {{ return(adapter.dispatch('trip_id')(columns)) }}
{%- endmacro %}

{% macro default__trip_id(columns) -%}
    md5(concat_ws('|'{% for column in columns %}, coalesce(cast({{ column }} as {{ dbt.type_string() }}), ''){% endfor %}))
{%- endmacro %}

{% macro bigquery__trip_id(columns) -%}
    to_hex(md5(array_to_string([{% for column in columns %}coalesce(cast({{ column }} as string), ''){% if not loop.last %}, {% endif %}{% endfor %}], '|')))
{%- endmacro %}
