-- Both datasets' trips, one naming.
select * from {{ ref('stg_green_trips') }}
union all
select * from {{ ref('stg_yellow_trips') }}
