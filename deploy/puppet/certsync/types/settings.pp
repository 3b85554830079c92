# @summary The install settings node.yaml's `defaults` may give every
#   certificate: those of certsync::certificate except install_dir, which is
#   each certificate's own.
type Certsync::Settings = Struct[{
  Optional[schedule]        => Certsync::Schedule,
  Optional[check]           => Certsync::Command,
  Optional[reload]          => Certsync::Command,
  Optional[verify]          => Certsync::Hostport,
  Optional[owner]           => Certsync::Owner,
  Optional[group]           => Certsync::Owner,
  Optional[cert_mode]       => Certsync::Mode,
  Optional[key_mode]        => Certsync::Mode,
  Optional[keep]            => Integer[1, 50],
  Optional[splay]           => Certsync::Duration,
  Optional[expiry_deadline] => Certsync::Duration,
  Optional[command_timeout] => Certsync::Duration,
  Optional[verify_timeout]  => Certsync::Duration,
  Optional[combined]        => Boolean,
}]
