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
    it 'leaves the rollout controller alone' do
      is_expected.not_to contain_file('/etc/systemd/system/certsync-rollout.service')
      is_expected.not_to contain_file('/etc/systemd/system/certsync-rollout.service.d/puppet.conf')
      is_expected.not_to contain_service('certsync-rollout')
    end
    it { is_expected.to contain_file('/etc/certsync/publisher.yaml').without_content(%r{rollout}) }
  end

  context 'with rollout policies' do
    let(:params) do
      base.merge(
        nodes: { 'web1' => AGE_RECIPIENT, 'web2' => SSH_RECIPIENT, 'web3' => AGE_RECIPIENT.sub('q' * 4, 'p' * 4) },
        rollout: { 'max_failures' => 1, 'soak' => '0s', 'canary' => ['web1'], 'wave_deadline' => '2h', 'waves' => ['25%', '100%'] },
        certificates: {
          'example.com' => ['web1', 'web2'],
          'own.example' => { 'nodes' => ['web2', 'web3'], 'rollout' => { 'canary' => '10%', 'max_failures' => '20%' } },
          'none.example' => { 'rollout' => 'none', 'nodes' => ['web3'] },
          'plain.example' => { 'nodes' => ['web1'] },
          'defaults.example' => { 'nodes' => ['web2'], 'rollout' => {} },
        },
      )
    end

    it { is_expected.to compile.with_all_deps }
    it 'writes them as certsync reads them, keys in certsync\'s order' do
      is_expected.to contain_file('/etc/certsync/publisher.yaml').with_content(%r{
        ^certificates:\n
        \ \ "defaults.example":\n
        \ \ \ \ nodes:\ \["web2"\]\n
        \ \ \ \ rollout:\ \{\}\n
        \ \ "example.com":\ \["web1",\ "web2"\]\n
        \ \ "none.example":\n
        \ \ \ \ nodes:\ \["web3"\]\n
        \ \ \ \ rollout:\ "none"\n
        \ \ "own.example":\n
        \ \ \ \ nodes:\ \["web2",\ "web3"\]\n
        \ \ \ \ rollout:\n
        \ \ \ \ \ \ canary:\ "10%"\n
        \ \ \ \ \ \ max_failures:\ "20%"\n
        \ \ "plain.example":\n
        \ \ \ \ nodes:\ \["web1"\]\n
        rollout:\n
        \ \ canary:\ \["web1"\]\n
        \ \ waves:\ \["25%",\ "100%"\]\n
        \ \ soak:\ "0s"\n
        \ \ wave_deadline:\ "2h"\n
        \ \ max_failures:\ 1\n
        \z
      }x)
    end
  end

  context 'with the rollout controller' do
    let(:params) { base.merge(manage_rollout: true) }

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_file('/etc/systemd/system/certsync-rollout.service').with(source: 'puppet:///modules/certsync/certsync-rollout.service', mode: '0644', owner: 'root') }
    it { is_expected.to contain_file('/etc/systemd/system/certsync-rollout.service.d').with(ensure: 'directory', mode: '0755') }
    it do
      is_expected.to contain_file('/etc/systemd/system/certsync-rollout.service.d/puppet.conf').with(mode: '0644').with_content(<<~CONF)
        # Managed by Puppet (certsync::publisher): where this host keeps certsync and
        # publisher.yaml. The unit itself is deploy/systemd/certsync-rollout.service.
        [Service]
        Environment=CERTSYNC_CONFIG=/etc/certsync/publisher.yaml
        ExecStart=
        ExecStart=/usr/local/bin/certsync rollout run
      CONF
    end
    it do
      is_expected.to contain_service('certsync-rollout').with(ensure: 'running', enable: true).that_subscribes_to(
        ['File[/usr/local/bin/certsync]', 'File[/etc/certsync/publisher.yaml]', 'File[/etc/systemd/system/certsync-rollout.service]',
         'File[/etc/systemd/system/certsync-rollout.service.d/puppet.conf]'],
      ).that_requires('Exec[certsync keygen signing]')
    end
  end

  context 'with the rollout controller, its own paths and no service' do
    let(:pre_condition) do
      "class { 'certsync': binary_source => 'puppet:///modules/profile/certsync', binary_path => '/opt/certsync/bin/certsync', " \
        "config_dir => '/srv/certsync', unit_dir => '/run/systemd/system' }"
    end
    let(:params) { base.merge(manage_rollout: true, manage_service: false, manage_signing_key: false) }

    it { is_expected.to compile.with_all_deps }
    it { is_expected.to contain_file('/run/systemd/system/certsync-rollout.service') }
    it do
      is_expected.to contain_file('/run/systemd/system/certsync-rollout.service.d/puppet.conf').with_content(
        %r{^Environment=CERTSYNC_CONFIG=/srv/certsync/publisher.yaml\nExecStart=\nExecStart=/opt/certsync/bin/certsync rollout run\n\z},
      )
    end
    it { is_expected.not_to contain_service('certsync-rollout') }
    it { is_expected.not_to contain_service('certsync-republish.timer') }
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
    'a certificate without nodes' => [{ certificates: { 'example.com' => [] } }, %r{certificates'? entry 'example.com' variant 0 expects size to be at least 1}],
    'two nodes with one recipient' => [{ nodes: { 'web1' => AGE_RECIPIENT, 'web2' => AGE_RECIPIENT } }, %r{two nodes share a recipient}],
    'a secret key as recipient' => [{ nodes: { 'web1' => 'AGE-SECRET-KEY-1QQQQ' } }, %r{nodes'? entry 'web1' expects a match for Certsync::Recipient}],
    'a bad node name' => [{ nodes: { 'web.1' => AGE_RECIPIENT } }, %r{nodes'?.*Certsync::Nodename}],
    'replicas out of range' => [{ stream: { 'replicas' => 7 } }, %r{stream'? entry 'replicas' expects an Integer\[1, 5\] value}],
    'a bad timeout' => [{ timeout: '30 seconds' }, %r{timeout'? expects a match for Certsync::Duration}],
    'manage_rollout not a Boolean' => [{ manage_rollout: 'yes' }, %r{manage_rollout'? expects a Boolean value}],
    # The mapping form of a certificate.
    'a mapping for an unknown node' => [{ certificates: { 'example.com' => { 'nodes' => ['web1', 'web3'] } } },
                                        %r{certificate "example.com": node "web3" is not listed in certsync::publisher's nodes}],
    'a mapping with a node listed twice' => [{ certificates: { 'example.com' => { 'nodes' => ['web2', 'web2'], 'rollout' => 'none' } } },
                                             %r{certificate "example.com": a node is listed twice}],
    'a mapping without nodes' => [{ certificates: { 'example.com' => { 'rollout' => 'none' } } }, %r{entry 'example.com' variant 1 expects a value for key 'nodes'}],
    'a mapping with no node' => [{ certificates: { 'example.com' => { 'nodes' => [] } } }, %r{entry 'example.com' variant 1 entry 'nodes' expects size to be at least 1}],
    'a mapping with an unknown key' => [{ certificates: { 'example.com' => { 'nodes' => ['web1'], 'canary' => ['web1'] } } },
                                        %r{entry 'example.com' variant 1 unrecognized key 'canary'}],
    'a rollout of undef (Hiera ~)' => [{ certificates: { 'example.com' => { 'nodes' => ['web1'], 'rollout' => :undef } } },
                                     %r{entry 'example.com' variant 1 entry 'rollout' expects a value of type Certsync::Rollout.*got Undef}],
    'a rollout other than none' => [{ certificates: { 'example.com' => { 'nodes' => ['web1'], 'rollout' => 'off' } } },
                                    %r{entry 'example.com' variant 1 entry 'rollout' expects a value of type Certsync::Rollout}],
    # The default policy.
    'a rollout with an unknown key' => [{ rollout: { 'canaries' => ['web1'] } }, %r{parameter 'rollout' unrecognized key 'canaries'}],
    'a canary not under nodes' => [{ rollout: { 'canary' => ['web9'] } }, %r{certsync: certsync::publisher rollout: canary "web9" is not one of certsync::publisher's nodes}],
    'a canary listed twice' => [{ rollout: { 'canary' => ['web1', 'web1'] } }, %r{certsync: certsync::publisher rollout: a canary is listed twice}],
    'an empty canary list' => [{ rollout: { 'canary' => [] } }, %r{parameter 'rollout' entry 'canary' variant 0 expects size to be at least 1}],
    'a canary percentage over 100' => [{ rollout: { 'canary' => '101%' } }, %r{parameter 'rollout' entry 'canary' expects a value of type Array.* or Certsync::Percent.*got String}],
    'a canary percentage without %' => [{ rollout: { 'canary' => '10' } }, %r{parameter 'rollout' entry 'canary' expects a value of type Array.* or Certsync::Percent.*got String}],
    'a certificate none of the canaries gets' => [{ rollout: { 'canary' => ['web1'] } },
                                                  %r{certificate "example.org": none of the rollout's canaries \(web1\) gets it}],
    'a wave as a number' => [{ rollout: { 'waves' => [25, 100] } }, %r{parameter 'rollout' entry 'waves' index 0 expects a match for Certsync::Percent.*got Integer}],
    'a wave with a fraction' => [{ rollout: { 'waves' => ['12.5%', '100%'] } }, %r{parameter 'rollout' entry 'waves' index 0 expects a match for Certsync::Percent.*got '12.5%'}],
    'a wave of 0%' => [{ rollout: { 'waves' => ['0%', '100%'] } }, %r{certsync: certsync::publisher rollout: waves: a wave of 0% releases no node}],
    'waves that do not grow' => [{ rollout: { 'waves' => ['50%', '50%', '100%'] } }, %r{certsync: certsync::publisher rollout: waves: 50% does not grow from 50%: waves are cumulative}],
    'waves that shrink' => [{ rollout: { 'waves' => ['50%', '25%', '100%'] } }, %r{certsync: certsync::publisher rollout: waves: 25% does not grow from 50%}],
    'waves short of 100%' => [{ rollout: { 'waves' => ['25%', '50%'] } }, %r{certsync: certsync::publisher rollout: waves: the last wave is 50%, want 100%}],
    'no waves' => [{ rollout: { 'waves' => [] } }, %r{parameter 'rollout' entry 'waves' expects size to be at least 1}],
    'a bad soak' => [{ rollout: { 'soak' => '10 minutes' } }, %r{rollout'? entry 'soak' expects a match for Certsync::Duration}],
    'a negative soak' => [{ rollout: { 'soak' => '-1m' } }, %r{rollout'? entry 'soak' expects a match for Certsync::Duration}],
    'a bad wave_deadline' => [{ rollout: { 'wave_deadline' => '1 hour' } }, %r{rollout'? entry 'wave_deadline' expects a match for Certsync::Duration}],
    'a zero wave_deadline' => [{ rollout: { 'wave_deadline' => '0s' } }, %r{certsync: certsync::publisher rollout: wave_deadline 0s: want a positive duration}],
    'negative max_failures' => [{ rollout: { 'max_failures' => -1 } }, %r{parameter 'rollout' entry 'max_failures' expects a value of type Integer\[0, 1000000\] or Certsync::Percent.*got Integer\[-1, -1\]}],
    'a max_failures percentage over 100' => [{ rollout: { 'max_failures' => '150%' } }, %r{parameter 'rollout' entry 'max_failures' expects a value of type Integer\[0, 1000000\] or Certsync::Percent.*got String}],
    'max_failures as a word' => [{ rollout: { 'max_failures' => 'one' } }, %r{parameter 'rollout' entry 'max_failures' expects a value of type Integer\[0, 1000000\] or Certsync::Percent.*got String}],
    'rollout none at the top' => [{ rollout: 'none' }, %r{parameter 'rollout' expects a Certsync::Rollout = Struct}],
    # A certificate's own policy.
    'an own canary not among its nodes' => [{ certificates: { 'example.com' => { 'nodes' => ['web1'], 'rollout' => { 'canary' => ['web2'] } } } },
                                            %r{certsync: certificate "example.com": rollout: canary "web2" is not one of its nodes}],
    'an own canary not under nodes' => [{ certificates: { 'example.com' => { 'nodes' => ['web1'], 'rollout' => { 'canary' => ['web9'] } } } },
                                        %r{certsync: certificate "example.com": rollout: canary "web9" is not one of its nodes}],
    'own waves short of 100%' => [{ certificates: { 'example.com' => { 'nodes' => ['web1'], 'rollout' => { 'waves' => ['10%'] } } } },
                                  %r{certsync: certificate "example.com": rollout: waves: the last wave is 10%, want 100%}],
    'an own zero wave_deadline' => [{ certificates: { 'example.com' => { 'nodes' => ['web1'], 'rollout' => { 'wave_deadline' => '0' } } } },
                                    %r{certsync: certificate "example.com": rollout: wave_deadline 0: want a positive duration}],
    'an own bad max_failures' => [{ certificates: { 'example.com' => { 'nodes' => ['web1'], 'rollout' => { 'max_failures' => '5' } } } },
                                  %r{entry 'example.com' variant 1 entry 'rollout' variant 0 entry 'max_failures' expects a value of type Integer}],
  )

  context 'with a default canary and a certificate that turns the rollout off or has its own' do
    let(:params) do
      base.merge(rollout: { 'canary' => ['web1'] },
                 certificates: { 'example.com' => ['web1', 'web2'], 'example.org' => { 'nodes' => ['web2'], 'rollout' => 'none' },
                                 'own.example' => { 'nodes' => ['web2'], 'rollout' => { 'canary' => ['web2'] } } })
    end

    it { is_expected.to compile.with_all_deps }
  end
end
