# @summary Quotes a string for node.yaml and publisher.yaml.
#
# The result is a YAML double-quoted scalar: backslash and double quote are
# escaped, so no value can end its line early, start a comment, or read as a
# number, a boolean, an anchor or an alias (certsync refuses anchors and
# aliases). The module's types refuse control characters before this runs;
# a value holding one fails here rather than be written.
#
# @param value
#   The string to quote.
#
# @return [String]
#   The quoted scalar, such as `"0 3 * * *"`.
#
# @example
#   certsync::yaml_string('nginx -t') # => '"nginx -t"'
function certsync::yaml_string(String $value) >> String {
  if $value =~ /[\x00-\x1f\x7f]/ {
    fail("certsync: a value for node.yaml or publisher.yaml holds a control character: ${String($value, '%p')}")
  }
  $escaped = $value.regsubst('\\\\', '\\\\\\\\', 'G').regsubst('"', '\\"', 'G')
  "\"${escaped}\""
}
