-- Yellow trips in the common naming. Yellow cabs take street hails only (trip_type 1) and
-- have no e-hail fee.
{{ staged_trips(source('ny_taxi', 'yellow_trips'), 'yellow', {
    'vendor_id': 'vendorid',
    'ratecode_id': 'ratecodeid',
    'pickup_location_id': 'pulocationid',
    'dropoff_location_id': 'dolocationid',
    'pickup_datetime': 'tpep_pickup_datetime',
    'dropoff_datetime': 'tpep_dropoff_datetime',
    'trip_type': 'cast(1 as ' ~ dbt.type_bigint() ~ ')',
    'ehail_fee': 'cast(0 as ' ~ dbt.type_float() ~ ')',
}) }}
