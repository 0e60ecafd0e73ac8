-- Every trip of both datasets with its service type and its pickup and dropoff zones. Built by
-- day: a run replaces only its days (Dagster's partition window, see in_day_window), so a day's
-- reload rebuilds its slice. A zone id dim_zones lacks is kept (the relationships tests fail).
{{ config(materialized='incremental', on_schema_change='fail', **by_day_incremental_config()) }}

with trips as (
    select *, cast(pickup_datetime as date) as pickup_date
    from {{ ref('int_trips_unioned') }}
    where {{ in_day_window('cast(pickup_datetime as date)') }}
),

zones as (
    select location_id, borough, zone from {{ ref('dim_zones') }}
)

select
    trips.trip_id,
    trips.service_type,
    trips.vendor_id,
    trips.ratecode_id,
    trips.pickup_location_id,
    pickup_zone.borough as pickup_borough,
    pickup_zone.zone as pickup_zone,
    trips.dropoff_location_id,
    dropoff_zone.borough as dropoff_borough,
    dropoff_zone.zone as dropoff_zone,
    trips.pickup_datetime,
    trips.pickup_date,
    trips.dropoff_datetime,
    trips.store_and_fwd_flag,
    trips.passenger_count,
    trips.trip_distance,
    trips.trip_type,
    trips.fare_amount,
    trips.extra,
    trips.mta_tax,
    trips.tip_amount,
    trips.tolls_amount,
    trips.ehail_fee,
    trips.improvement_surcharge,
    trips.total_amount,
    trips.congestion_surcharge,
    trips.payment_type,
    {{ payment_type_description('trips.payment_type') }} as payment_type_description
from trips
left join zones as pickup_zone on trips.pickup_location_id = pickup_zone.location_id
left join zones as dropoff_zone on trips.dropoff_location_id = dropoff_zone.location_id
