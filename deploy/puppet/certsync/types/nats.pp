# @summary The `nats:` section of node.yaml and publisher.yaml, under its own
#   key names: how certsync reaches the NATS servers.
#
# url is required. At most one of creds (a JWT credentials file), nkey (a
# seed file from `certsync auth`) and user with password. tls names the
# private CA of the servers and, for client certificates, cert and key. The
# password may be given as Sensitive (e.g. from hiera-eyaml).
type Certsync::Nats = Struct[{
  url                => Certsync::Natsurl,
  Optional[creds]    => Certsync::Absolutepath,
  Optional[nkey]     => Certsync::Absolutepath,
  Optional[user]     => Pattern[/\A[^\x00-\x1f\x7f]+\z/],
  Optional[password] => Variant[Sensitive[String[1]], Pattern[/\A[^\x00-\x1f\x7f]+\z/]],
  Optional[tls]      => Struct[{
    Optional[ca]   => Certsync::Absolutepath,
    Optional[cert] => Certsync::Absolutepath,
    Optional[key]  => Certsync::Absolutepath,
  }],
}]
