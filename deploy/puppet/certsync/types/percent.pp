# @summary A percentage as publisher.yaml writes it: a whole number from 0 to
#   100 and `%`, such as `25%` (no leading zero, no fraction).
type Certsync::Percent = Pattern[/\A(100|[1-9]?[0-9])%\z/]
