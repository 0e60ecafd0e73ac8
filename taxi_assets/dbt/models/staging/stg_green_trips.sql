-- Green trips in the common naming.
{{ staged_trips(source('ny_taxi', 'green_trips'), 'green', {
    'vendor_id': 'vendor_id',
    'ratecode_id': 'ratecode_id',
    'pickup_location_id': 'pu_location_id',
    'dropoff_location_id': 'do_location_id',
    'pickup_datetime': 'lpep_pickup_datetime',
    'dropoff_datetime': 'lpep_dropoff_datetime',
    'trip_type': 'trip_type',
    'ehail_fee': 'ehail_fee',
}) }}
