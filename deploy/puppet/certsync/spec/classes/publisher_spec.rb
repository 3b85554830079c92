# frozen_string_literal: true

require 'spec_helper'

describe 'certsync::publisher' do
  let(:pre_condition) { CERTSYNC_CLASS }
  let(:base) do
    {
      nats: { 'url' => 'nats://127.0.0.1:4222', 'nkey' => '/etc/certsync/nats-auth/publisher.nk' },
      nodes: { 'web2' => SSH_RECIPIENT, 'web1' => AGE_RECIPIENT },
      certificates: { 'example.com' => ['web1', 'web2'], 'example.org' => ['web2'] },
    }
  end
  let(:params) { base }

  context 'with the module defaults' do
    it { is_expected.to compile.with_all_deps }
    it do
      is_expected.to contain_file('/etc/certsync/publisher.yaml').with(owner: 'root', mode: '0600').with_content(<<~YAML)
        # Managed by Puppet (certsync::publisher): edits here are overwritten.
        # The keys: the certsync module's REFERENCE.md, certsync's README.md.
        nats:
          url: "nats://127.0.0.1:4222"
          nkey: "/etc/certsync/nats-auth/publisher.nk"
        signing_key: "/etc/certsync/signing.key"
        nodes:
          "web1": "#{AGE_RECIPIENT}"
          "web2": "#{SSH_RECIPIENT}"
        certificates:
          "example.com": ["web1", "web2"]
          "example.org": ["web2"]
      YAML
    end
    it 'keeps the signing key when present' do
      is_expected.to contain_exec('certsync keygen signing').with(
        command: ['/usr/local/bin/certsync', 'keygen', 'signing', '--out', '/etc/certsync/signing.key'],
        creates: '/etc/certsync/signing.key', umask: '0077', logoutput: true,
      ).that_requires(['File[/usr/local/bin/certsync]', 'File[/etc/certsync]'])
    end
    it 'installs the deploy hook as shipped in deploy/certbot' do
      is_expected.to contain_file('/etc/letsencrypt/renewal-hooks/deploy/certsync').with(mode: '0755', owner: 'root').with_content(
        File.read(File.expand_path('../../../../certbot/certsync-deploy-hook', __dir__)),
      )
    end
    ['certsync-republish.service', 'certsync-republish.timer'].each do |unit|
      it { is_expected.to contain_file("/etc/systemd/system/#{unit}").with_source("puppet:///modules/certsync/#{unit}") }
    end
    it do
      is_expected.to contain_file('/etc/systemd/system/certsync-republish.service.d/puppet.conf').with_content(<<~CONF)
        # Managed by Puppet (certsync::publisher): where this host keeps certsync and
        # publisher.yaml. The unit itself is deploy/systemd/certsync-republish.service.
        [Service]
        Environment=CERTSYNC_CONFIG=/etc/certsync/publisher.yaml
        ExecStart=
        ExecStart=/usr/local/bin/certsync republish
      CONF
    end
    it { is_expected.to contain_service('certsync-republish.timer').with(ensure: 'running', enable: true) }
  end

  context 'with every setting' do
    let(:params) do
      base.merge(signing_key: '/srv/keys/signing.key', lineages: '/srv/letsencrypt/live', timeout: '1m',
                 stream: { 'replicas' => 3, 'history' => 10, 'duplicate_window' => '12h' },
                 hook_dir: '/srv/letsencrypt/renewal-hooks/deploy', manage_signing_key: false, manage_service: false)
    end

    it { is_expected.to compile.with_all_deps }
    it do
      is_expected.to contain_file('/etc/certsync/publisher.yaml').with_content(
        %r{^signing_key: "/srv/keys/signing.key"\nlineages: "/srv/letsencrypt/live"\n.*^stream:\n  replicas: 3\n  history: 10\n  duplicate_window: "12h"\ntimeout: "1m"\n\z}m,
      )
    end
    it { is_expected.not_to contain_exec('certsync keygen signing') }
    it { is_expected.not_to contain_service('certsync-republish.timer') }
    it { is_expected.to contain_file('/srv/letsencrypt/renewal-hooks/deploy/certsync').with_content(%r{^exec /usr/local/bin/certsync publish --config /etc/certsync/publisher.yaml$}) }
  end

  context 'with a nats password' do
    let(:params) { base.merge(nats: { 'url' => 'nats://127.0.0.1:4222', 'user' => 'pub', 'password' => 'pw' }) }

    it { is_expected.to contain_file('/etc/certsync/publisher.yaml').with_content(sensitive(%r{^  password: "pw"$})) }
  end

  context 'beside certsync::server on one management host' do
    let(:pre_condition) { "#{CERTSYNC_CLASS}\ninclude certsync::server" }

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_file('/usr/local/bin/certsync') }
  end

  it_refuses(
    'a certificate for an unknown node' => [{ certificates: { 'example.com' => ['web1', 'web3'] } },
                                             %r{certificate "example.com": node "web3" is not listed in certsync::publisher's nodes}],
    'a node listed twice' => [{ certificates: { 'example.com' => ['web1', 'web1'] } }, %r{certificate "example.com": a node is listed twice}],
    'a certificate without nodes' => [{ certificates: { 'example.com' => [] } }, %r{certificates'? entry 'example.com' expects size to be at least 1}],
    'two nodes with one recipient' => [{ nodes: { 'web1' => AGE_RECIPIENT, 'web2' => AGE_RECIPIENT } }, %r{two nodes share a recipient}],
    'a secret key as recipient' => [{ nodes: { 'web1' => 'AGE-SECRET-KEY-1QQQQ' } }, %r{nodes'? entry 'web1' expects a match for Certsync::Recipient}],
    'a bad node name' => [{ nodes: { 'web.1' => AGE_RECIPIENT } }, %r{nodes'?.*Certsync::Nodename}],
    'replicas out of range' => [{ stream: { 'replicas' => 7 } }, %r{stream'? entry 'replicas' expects an Integer\[1, 5\] value}],
    'a bad timeout' => [{ timeout: '30 seconds' }, %r{timeout'? expects a match for Certsync::Duration}],
  )
end
