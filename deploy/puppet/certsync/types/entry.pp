# @summary One certificate's entry in node.yaml: install_dir and the install
#   settings of Certsync::Settings, under node.yaml's own key names.
type Certsync::Entry = Struct[{
  Optional[install_dir]     => Certsync::Absolutepath,
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
