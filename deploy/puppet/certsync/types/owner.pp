# @summary The owner or group of installed files: a name or a numeric id.
type Certsync::Owner = Variant[Integer[0], Pattern[/\A[A-Za-z0-9_.][A-Za-z0-9_.-]{0,255}\z/]]
