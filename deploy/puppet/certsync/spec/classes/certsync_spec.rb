# frozen_string_literal: true

require 'spec_helper'

describe 'certsync' do
  context 'with a binary source and the module defaults' do
    let(:params) { { binary_source: 'puppet:///modules/profile/certsync' } }

    it { is_expected.to compile.with_all_deps }
    it do
      is_expected.to contain_file('/usr/local/bin/certsync').with(
        ensure: 'file', source: 'puppet:///modules/profile/certsync', owner: 'root', group: 'root', mode: '0755',
      )
    end
    it { is_expected.to contain_file('/etc/certsync').with(ensure: 'directory', owner: 'root', mode: '0700') }
  end

  context 'with every path moved' do
    let(:params) do
      { binary_source: '/srv/dist/certsync', binary_path: '/opt/certsync/bin/certsync',
        config_dir: '/srv/root/etc/certsync', unit_dir: '/srv/root/etc/systemd/system' }
    end

    it { is_expected.to contain_file('/opt/certsync/bin/certsync').with_source('/srv/dist/certsync') }
    it { is_expected.to contain_file('/srv/root/etc/certsync') }
  end

  context 'without a binary source' do
    it { is_expected.to compile.and_raise_error(%r{expects a value for parameter 'binary_source'}) }
  end

  ['certsync', 'etc/certsync', '/etc/../certsync', '/etc/cert sync', '/', '/etc/certsync/', 'http://x/certsync'].each do |bad|
    context "with binary_path #{bad.inspect}" do
      let(:params) { { binary_source: 'puppet:///modules/profile/certsync', binary_path: bad } }

      it { is_expected.to compile.and_raise_error(%r{binary_path'? expects a match for Certsync::Absolutepath}) }
    end
  end
end
