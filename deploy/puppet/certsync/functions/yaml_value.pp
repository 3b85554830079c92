# @summary A node.yaml or publisher.yaml scalar: a string quoted by
#   certsync::yaml_string, an integer or a boolean as YAML writes them.
#
# @param value
#   The value.
#
# @return [String] the scalar.
function certsync::yaml_value(Variant[String, Integer, Boolean] $value) >> String {
  $value ? {
    String  => certsync::yaml_string($value),
    default => String($value),
  }
}
