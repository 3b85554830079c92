# frozen_string_literal: true

require 'spec_helper'

describe 'certsync::node' do
  let(:pre_condition) { CERTSYNC_CLASS }
  let(:base) do
    {
      nats: { 'url' => 'nats://mgmt.example.net:4222', 'nkey' => '/etc/certsync/web1.nk' },
      trusted_publishers: [PUBLISHER_KEY],
      certificates: { 'example.com' => {} },
    }
  end
  let(:params) { base }

  context 'with the module defaults' do
    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_certsync__certificate('example.com').with_settings({}) }
    it do
      is_expected.to contain_file('/etc/certsync/node.yaml').with(owner: 'root', group: 'root', mode: '0600').with_content(<<~YAML)
        # Managed by Puppet (certsync::node): edits here are overwritten.
        # The keys: the certsync module's REFERENCE.md, certsync's docs/INSTALL.md.
        name: "web1"
        nats:
          url: "nats://mgmt.example.net:4222"
          nkey: "/etc/certsync/web1.nk"
        identity: "/etc/certsync/node.key"
        trusted_publishers:
          - "#{PUBLISHER_KEY}"
        stage_dir: "/certsync/live"
        certificates:
          "example.com": {}
      YAML
    end
    it 'creates the age identity only when it is missing' do
      is_expected.to contain_exec('certsync keygen node').with(
        command: ['/usr/local/bin/certsync', 'keygen', 'node', '--out', '/etc/certsync/node.key'],
        creates: '/etc/certsync/node.key', umask: '0077', logoutput: true,
      ).that_requires(['File[/usr/local/bin/certsync]', 'File[/etc/certsync]']).that_comes_before('Service[certsync-node]')
    end
    it do
      is_expected.to contain_file('/etc/systemd/system/certsync-node.service').with(
        source: 'puppet:///modules/certsync/certsync-node.service', mode: '0644',
      )
    end
    it do
      is_expected.to contain_file('/etc/systemd/system/certsync-node.service.d/puppet.conf').with_content(<<~CONF)
        # Managed by Puppet (certsync::node): where this host keeps certsync and
        # node.yaml, and the install folders the node writes outside
        # /etc/letsencrypt/live. The unit itself is deploy/systemd/certsync-node.service.
        [Service]
        Environment=CERTSYNC_CONFIG=/etc/certsync/node.yaml
        ExecStart=
        ExecStart=/usr/local/bin/certsync node run
      CONF
    end
    it do
      is_expected.to contain_service('certsync-node').with(ensure: 'running', enable: true).that_subscribes_to(
        ['File[/usr/local/bin/certsync]', 'File[/etc/certsync/node.yaml]',
         'File[/etc/systemd/system/certsync-node.service]',
         'File[/etc/systemd/system/certsync-node.service.d/puppet.conf]'],
      )
    end
  end

  context 'with manage_service => false' do
    let(:params) { base.merge(manage_service: false) }

    it { is_expected.to compile.with_all_deps }
    it { is_expected.not_to contain_service('certsync-node') }
  end

  context 'with the SSH host key as identity' do
    let(:params) { base.merge(identity: 'ssh_host_key') }

    it { is_expected.not_to contain_exec('certsync keygen node') }
    it { is_expected.to contain_file('/etc/certsync/node.yaml').with_content(%r{^identity: "/etc/ssh/ssh_host_ed25519_key"$}) }
  end

  context 'with every setting' do
    let(:params) do
      {
        nats: { 'url' => 'tls://a.example.net:4222,tls://b.example.net:4222', 'creds' => '/etc/certsync/web1.creds',
                'tls' => { 'ca' => '/etc/certsync/ca.pem', 'cert' => '/etc/certsync/c.pem', 'key' => '/etc/certsync/c.key' } },
        trusted_publishers: [PUBLISHER_KEY, 'certsync-ed25519:' + ('B' * 43) + '='],
        node_name: 'edge-7',
        identity: 'age',
        identity_file: '/var/lib/certsync/id.key',
        stage_dir: '/srv/certsync/stage',
        metrics_listen: '127.0.0.1:9469',
        status_interval: '1m',
        defaults: { 'check' => 'nginx -t', 'reload' => 'systemctl reload nginx' },
        certificates: {
          'example.org' => {
            'install_dir' => '/etc/haproxy/certs/example.org', 'schedule' => '0 3 * * *', 'check' => 'haproxy -c -f "/etc/haproxy/haproxy.cfg"',
            'reload' => 'systemctl reload haproxy', 'verify' => '[::1]:8443', 'owner' => 'haproxy', 'group' => 0,
            'cert_mode' => '0640', 'key_mode' => '0640', 'keep' => 5, 'splay' => '30m', 'expiry_deadline' => '0s',
            'command_timeout' => '2m', 'verify_timeout' => '45s', 'combined' => true
          },
          'example.com' => { 'schedule' => 'manual' },
        },
      }
    end

    it { is_expected.to compile.with_all_deps }
    it 'renders every key in the schema order, certificates sorted, every string quoted' do
      is_expected.to contain_file('/etc/certsync/node.yaml').with_content(<<~YAML)
        # Managed by Puppet (certsync::node): edits here are overwritten.
        # The keys: the certsync module's REFERENCE.md, certsync's docs/INSTALL.md.
        name: "edge-7"
        nats:
          url: "tls://a.example.net:4222,tls://b.example.net:4222"
          creds: "/etc/certsync/web1.creds"
          tls:
            ca: "/etc/certsync/ca.pem"
            cert: "/etc/certsync/c.pem"
            key: "/etc/certsync/c.key"
        identity: "/var/lib/certsync/id.key"
        trusted_publishers:
          - "#{PUBLISHER_KEY}"
          - "certsync-ed25519:#{'B' * 43}="
        stage_dir: "/srv/certsync/stage"
        metrics_listen: "127.0.0.1:9469"
        status_interval: "1m"
        defaults:
          check: "nginx -t"
          reload: "systemctl reload nginx"
        certificates:
          "example.com":
            schedule: "manual"
          "example.org":
            install_dir: "/etc/haproxy/certs/example.org"
            schedule: "0 3 * * *"
            check: "haproxy -c -f \\"/etc/haproxy/haproxy.cfg\\""
            reload: "systemctl reload haproxy"
            verify: "[::1]:8443"
            owner: "haproxy"
            group: 0
            cert_mode: "0640"
            key_mode: "0640"
            keep: 5
            splay: "30m"
            expiry_deadline: "0s"
            command_timeout: "2m"
            verify_timeout: "45s"
            combined: true
      YAML
    end
    it { is_expected.to contain_exec('certsync keygen node').with_creates('/var/lib/certsync/id.key') }
    it 'opens install parents outside /etc/letsencrypt/live to the unit' do
      is_expected.to contain_file('/etc/systemd/system/certsync-node.service.d/puppet.conf').with_content(
        %r{^ExecStart=/usr/local/bin/certsync node run\nReadWritePaths=-/etc/haproxy/certs\n\z},
      )
    end
  end

  context 'with a nats password' do
    let(:params) { base.merge(nats: { 'url' => 'nats://127.0.0.1:4222', 'user' => 'web1', 'password' => 's3cret "pw"' }) }

    it 'keeps node.yaml out of diffs and reports' do
      is_expected.to contain_file('/etc/certsync/node.yaml').with_content(sensitive(%r{^  password: "s3cret \\"pw\\""$}))
    end
  end

  # Bad input: a clear error naming what and why, and no catalog (it_refuses, spec_helper.rb).
  it_refuses(
    'a node name with a space' => [{ node_name: 'web 1' }, %r{node_name'? expects a match for Certsync::Nodename}],
    'no trusted publisher' => [{ trusted_publishers: [] }, %r{trusted_publishers'? expects size to be at least 1}],
    'a private key as trusted publisher' => [{ trusted_publishers: ['AGE-SECRET-KEY-1XYZ'] }, %r{trusted_publishers'?.*Certsync::Publickey}],
    'no certificate' => [{ certificates: {} }, %r{certificates'? expects size to be at least 1}],
    'a bad certificate name' => [{ certificates: { '../etc' => {} } }, %r{certificates'?.*Certsync::Certname}],
    'an unknown setting' => [{ certificates: { 'example.com' => { 'instal_dir' => '/x' } } },
                             %r{parameter 'certificates' entry 'example.com' unrecognized key 'instal_dir'}],
    'a cron schedule with six fields' => [{ certificates: { 'example.com' => { 'schedule' => '0 0 3 * * *' } } },
                                          %r{parameter 'certificates' entry 'example.com' entry 'schedule' expects}],
    'keep out of range' => [{ certificates: { 'example.com' => { 'keep' => 60 } } }, %r{parameter 'certificates' entry 'example.com' entry 'keep' expects}],
    'a command on two lines' => [{ certificates: { 'example.com' => { 'reload' => "true\nrm -rf /" } } },
                                 %r{parameter 'certificates' entry 'example.com' entry 'reload' expects}],
    'a group-writable cert_mode' => [{ certificates: { 'example.com' => { 'cert_mode' => '0664' } } },
                                     %r{certificate "example.com": cert_mode 0664 is writable by group or others}],
    'a key readable by others' => [{ certificates: { 'example.com' => { 'key_mode' => '0644' } } },
                                   %r{certificate "example.com": key_mode 0644 is open to others}],
    'a bad mode in defaults' => [{ defaults: { 'key_mode' => '0604' } }, %r{defaults: key_mode 0604 is open to others}],
    'install_dir in defaults' => [{ defaults: { 'install_dir' => '/srv/x' } }, %r{defaults'? unrecognized key 'install_dir'}],
    'install_dir inside stage_dir' => [{ certificates: { 'example.com' => { 'install_dir' => '/certsync/live/x/example.com' } } },
                                       %r{certificate "example.com": install_dir /certsync/live/x/example.com overlaps stage_dir /certsync/live}],
    'two install_dirs nested' => [{ certificates: { 'a' => { 'install_dir' => '/srv/tls/a' }, 'b' => { 'install_dir' => '/srv/tls/a/b' } } },
                                  %r{install_dir /srv/tls/a(/b)? overlaps certificate "[ab]"'s /srv/tls/a}],
    'an install_dir in another install store' => [{ certificates: { 'a' => { 'install_dir' => '/srv/tls/a' }, 'b' => { 'install_dir' => '/srv/tls/.certsync/b' } } },
                                                  %r{overlaps (certificate "a"'s install store|its own install store) /srv/tls/\.certsync}],
    'stage_dir in an install store' => [{ stage_dir: '/srv/tls/.certsync/stage', certificates: { 'a' => { 'install_dir' => '/srv/tls/a' } } },
                                        %r{certificate "a": stage_dir /srv/tls/\.certsync/stage overlaps the install store /srv/tls/\.certsync that install_dir /srv/tls/a keeps its versions in \(}],
    'creds and nkey together' => [{ nats: { 'url' => 'nats://127.0.0.1:4222', 'creds' => '/a', 'nkey' => '/b' } },
                                  %r{nats: give at most one of creds, nkey and user/password, not creds and nkey}],
    'a user without password' => [{ nats: { 'url' => 'nats://127.0.0.1:4222', 'user' => 'web1' } }, %r{nats: user and password go together}],
    'a tls cert without key' => [{ nats: { 'url' => 'nats://127.0.0.1:4222', 'tls' => { 'cert' => '/c.pem' } } },
                                 %r{nats: tls.cert and tls.key go together}],
    'no nats url' => [{ nats: { 'nkey' => '/b' } }, %r{nats'? expects a value for key 'url'}],
    'a bad metrics address' => [{ metrics_listen: 'localhost' }, %r{metrics_listen'? expects a match for Certsync::Hostport}],
    'an unknown identity kind' => [{ identity: 'rsa' }, %r{identity'? expects a match for Enum\['age', 'ssh_host_key'\]}],
  )
end
