# @summary A Go duration as certsync reads it: `90s`, `5m`, `1h30m`, `168h`, `0s`.
type Certsync::Duration = Pattern[/\A(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)\z/]
