# @summary The embedded NATS server of a single management host:
#   nats-server.conf and the `certsync-server` service.
#
# Installs `<config_dir>/nats-server.conf` (0600; by default
# deploy/nats/nats-server.conf exactly as shipped) and
# `certsync-server.service` exactly as shipped in deploy/systemd, with a
# drop-in (`certsync-server.service.d/puppet.conf`) naming binary_path and
# the configuration; runs the service unless `manage_service` is false. A
# change of the configuration, the binary or the unit restarts the server.
# Larger estates run a nats-server cluster instead and need no
# certsync::server.
#
# @param manage_service
#   Run and enable `certsync-server`. false leaves it alone.
# @param nats_config_source
#   Where nats-server.conf comes from: a `puppet:///` URL or a path on the
#   host. undef: the module's copy of deploy/nats/nats-server.conf, whose TLS
#   and `include ./nats-auth/auth.conf` lines are comments to enable in your
#   own copy.
#
# @example Hiera
#   certsync::server::nats_config_source: 'puppet:///modules/profile/certsync/nats-server.conf'
class certsync::server (
  Boolean                    $manage_service,
  Optional[Certsync::Source] $nats_config_source = undef,
) {
  contain certsync
  $binary_path = $certsync::binary_path
  $config_dir = $certsync::config_dir
  $unit_dir = $certsync::unit_dir
  $config_file = "${config_dir}/nats-server.conf"

  $source = $nats_config_source ? {
    undef   => 'puppet:///modules/certsync/nats-server.conf',
    default => $nats_config_source,
  }
  file { $config_file:
    ensure => file,
    owner  => 'root',
    group  => 'root',
    mode   => '0600',
    source => $source,
  }

  certsync::unit { 'certsync-server.service':
    dropin => epp('certsync/server.dropin.epp', {
      'binary_path' => $binary_path,
      'config_file' => $config_file,
    }),
  }

  if $manage_service {
    service { 'certsync-server':
      ensure    => running,
      enable    => true,
      subscribe => [
        File[$binary_path],
        File[$config_file],
        File["${unit_dir}/certsync-server.service"],
        File["${unit_dir}/certsync-server.service.d/puppet.conf"],
      ],
    }
  }
}
