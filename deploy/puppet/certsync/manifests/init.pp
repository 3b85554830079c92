# @summary What every certsync host has: the binary and the configuration folder.
#
# certsync::node, certsync::publisher and certsync::server each `contain` this
# class, so a management host that is both publisher and server declares the
# binary and /etc/certsync once. Give its parameters in Hiera
# (`certsync::binary_source: …`), or declare it with resource-like syntax
# before the role classes.
#
# @param binary_source
#   Where the certsync binary comes from: a `puppet:///` URL (a file in one of
#   your modules, e.g. `puppet:///modules/profile/certsync`) or an absolute
#   path on the host. Installed at binary_path, mode 0755.
# @param binary_path
#   Where the binary is installed. The units' `ExecStart=` and the certbot hook
#   name it.
# @param config_dir
#   The folder of node.yaml, publisher.yaml, nats-server.conf and the keys;
#   created 0700, owned by root.
# @param unit_dir
#   The systemd unit folder the role classes install their units into.
#
# @example Hiera
#   certsync::binary_source: 'puppet:///modules/profile/certsync'
class certsync (
  Certsync::Source       $binary_source,
  Certsync::Absolutepath $binary_path,
  Certsync::Absolutepath $config_dir,
  Certsync::Absolutepath $unit_dir,
) {
  file { $config_dir:
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0700',
  }

  file { $binary_path:
    ensure => file,
    source => $binary_source,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }
}
