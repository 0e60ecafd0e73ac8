{#
  The staging select both datasets share: `source_relation`'s columns (`names` maps our name to
  the dataset's warehouse column) in one naming, with the trip id and the service type.
#}
{% macro staged_trips(source_relation, service_type, names) -%}
with trips as (
    select
        {{ names['vendor_id'] }} as vendor_id,
        {{ names['ratecode_id'] }} as ratecode_id,
        {{ names['pickup_location_id'] }} as pickup_location_id,
        {{ names['dropoff_location_id'] }} as dropoff_location_id,
        cast({{ names['pickup_datetime'] }} as {{ dbt.type_timestamp() }}) as pickup_datetime,
        cast({{ names['dropoff_datetime'] }} as {{ dbt.type_timestamp() }}) as dropoff_datetime,
        store_and_fwd_flag,
        passenger_count,
        trip_distance,
        {{ names['trip_type'] }} as trip_type,
        fare_amount,
        extra,
        mta_tax,
        tip_amount,
        tolls_amount,
        {{ names['ehail_fee'] }} as ehail_fee,
        improvement_surcharge,
        total_amount,
        congestion_surcharge,
        payment_type
    from {{ source_relation }}
),

numbered as (
    select
        *,
        row_number() over (
            partition by
                vendor_id, pickup_datetime, dropoff_datetime, pickup_location_id,
                dropoff_location_id, fare_amount, total_amount, trip_distance
        ) as ordinal
    from trips
)

select
    {{ trip_id(["'" ~ service_type ~ "'", 'vendor_id', 'pickup_datetime', 'dropoff_datetime',
                'pickup_location_id', 'dropoff_location_id', 'fare_amount', 'total_amount',
                'trip_distance', 'ordinal']) }} as trip_id,
    '{{ service_type }}' as service_type,
    vendor_id, ratecode_id, pickup_location_id, dropoff_location_id,
    pickup_datetime, dropoff_datetime, store_and_fwd_flag, passenger_count, trip_distance,
    trip_type, fare_amount, extra, mta_tax, tip_amount, tolls_amount, ehail_fee,
    improvement_surcharge, total_amount, congestion_surcharge, payment_type
from numbered
{%- endmacro %}
