# @summary The NATS servers: one URL or several comma-separated, with the
#   scheme `nats`, `tls`, `ws` or `wss`, or a bare `HOST:PORT`.
type Certsync::Natsurl = Pattern[/\A((nats|tls|ws|wss):\/\/)?[^\s,]+(,((nats|tls|ws|wss):\/\/)?[^\s,]+)*\z/]
