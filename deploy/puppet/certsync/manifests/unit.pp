# @summary A systemd unit exactly as shipped, with Puppet's drop-in.
#
# @api private
#
# Used by certsync::node, certsync::publisher and certsync::server, not
# declared by hand. Installs `<unit_dir>/<title>` (0644, root) as a byte copy
# of the module's `files/<title>` (itself a copy of deploy/systemd/<title>)
# and, when `dropin` is given, the folder `<unit_dir>/<title>.d` (0755) and
# `<unit_dir>/<title>.d/puppet.conf` (0644) holding it. It starts no service:
# the declaring class's service subscribes to the unit's and the drop-in's
# File resources themselves, so a change of the drop-in folder alone
# restarts nothing.
#
# @param dropin
#   The rendered drop-in (binary_path, the configuration, write paths); undef
#   for a unit Puppet installs unchanged, such as certsync-republish.timer.
#
# @example Declared by a role class
#   certsync::unit { 'certsync-server.service':
#     dropin => epp('certsync/server.dropin.epp', {
#       'binary_path' => $binary_path,
#       'config_file' => $config_file,
#     }),
#   }
define certsync::unit (
  Optional[String[1]] $dropin = undef,
) {
  $unit_dir = $certsync::unit_dir

  file { "${unit_dir}/${title}":
    ensure => file,
    owner  => 'root',
    group  => 'root',
    mode   => '0644',
    source => "puppet:///modules/certsync/${title}",
  }
  if $dropin =~ NotUndef {
    file { "${unit_dir}/${title}.d":
      ensure => directory,
      owner  => 'root',
      group  => 'root',
      mode   => '0755',
    }
    file { "${unit_dir}/${title}.d/puppet.conf":
      ensure  => file,
      owner   => 'root',
      group   => 'root',
      mode    => '0644',
      content => $dropin,
    }
  }
}
