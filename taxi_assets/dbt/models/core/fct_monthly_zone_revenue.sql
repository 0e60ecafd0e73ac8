-- The course's revenue mart: per pickup zone, month and service type, the monthly sum of each
-- amount, the trips, and their average passengers and distance.
select
    pickup_location_id as revenue_zone_id,
    pickup_borough as revenue_borough,
    pickup_zone as revenue_zone,
    cast({{ dbt.date_trunc('month', 'pickup_date') }} as date) as revenue_month,
    service_type,
    sum(fare_amount) as revenue_monthly_fare,
    sum(extra) as revenue_monthly_extra,
    sum(mta_tax) as revenue_monthly_mta_tax,
    sum(tip_amount) as revenue_monthly_tip_amount,
    sum(tolls_amount) as revenue_monthly_tolls_amount,
    sum(ehail_fee) as revenue_monthly_ehail_fee,
    sum(improvement_surcharge) as revenue_monthly_improvement_surcharge,
    sum(congestion_surcharge) as revenue_monthly_congestion_surcharge,
    sum(total_amount) as revenue_monthly_total_amount,
    count(trip_id) as total_monthly_trips,
    avg(passenger_count) as avg_monthly_passenger_count,
    avg(trip_distance) as avg_monthly_trip_distance
from {{ ref('fct_trips') }}
group by 1, 2, 3, 4, 5
