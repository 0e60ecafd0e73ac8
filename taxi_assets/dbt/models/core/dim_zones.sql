-- The TLC's taxi zones; the course renames the green cabs' "Boro Zone" service zone.
select
    location_id,
    borough,
    zone,
    replace(service_zone, 'Boro', 'Green') as service_zone
from {{ source('ny_taxi', 'taxi_zones') }}
