# frozen_string_literal: true

require 'spec_helper'

# certsync::certificate is declared by certsync::node for each entry of its
# certificates (spec/classes/node_spec.rb checks those); declared on its own,
# it refuses, since node.yaml is written by certsync::node alone.
describe 'certsync::certificate' do
  let(:title) { 'example.com' }

  context 'declared without certsync::node' do
    it { is_expected.to compile.and_raise_error(%r{certificate "example.com": add it to certsync::node's certificates}) }
  end

  context 'declared beside certsync::node for a certificate it does not list' do
    let(:pre_condition) do
      <<~PP
        class { 'certsync': binary_source => 'puppet:///modules/profile/certsync' }
        class { 'certsync::node':
          nats               => {'url' => 'nats://127.0.0.1:4222'},
          trusted_publishers => ['#{PUBLISHER_KEY}'],
          certificates       => {'example.org' => {}},
        }
      PP
    end

    it { is_expected.to compile.and_raise_error(%r{certificate "example.com": add it to certsync::node's certificates}) }
  end

  context 'with a title that is no certificate name' do
    let(:title) { 'example..com' }

    it { is_expected.to compile.and_raise_error(%r{certificate name 'example..com' is not a certbot lineage name}) }
  end

  context 'with a setting of the wrong type' do
    let(:params) { { settings: { 'combined' => 'yes' } } }

    it { is_expected.to compile.and_raise_error(%r{Certsync::Certificate\[example.com\].*combined}) }
  end
end
