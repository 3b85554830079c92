# @summary When a node installs a staged certificate: `immediate`, `manual`,
#   or five cron fields (minute hour day-of-month month day-of-week, local time).
#
# No `@` descriptors, no seconds field, no `TZ=`: certsync refuses them. The
# fields themselves are checked by certsync when it loads node.yaml.
type Certsync::Schedule = Variant[
  Enum['immediate', 'manual'],
  Pattern[/\A[0-9*,\/A-Za-z-]+( [0-9*,\/A-Za-z-]+){4}\z/],
]
