# @summary A `HOST:PORT` (an IPv6 host in brackets), such as `127.0.0.1:443`.
type Certsync::Hostport = Pattern[/\A([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}\z/]
