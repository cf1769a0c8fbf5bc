{##
  The validation prologue of an operation, generated from its contract header.
  Every KEYS and ARGV entry becomes a named local; every argument is checked before the body runs,
  so a bad call is rejected before the first write.
##}
{%- macro prologue(op) %}
  local rcall = redis.call
{%- if op.min_keys < op.keys|length and not op.variadic_keys %}
  if #KEYS < {{ op.min_keys }} or #KEYS > {{ op.keys|length }} then prl_fail('BADARG', '{{ op.name }} takes {{ op.min_keys }}..{{ op.keys|length }} keys, got ' .. #KEYS) end
{%- endif %}
  prl_arity('{{ op.name }}', KEYS, ARGV, {{ -1 if (op.variadic_keys or op.min_keys < op.keys|length) else op.keys|length }}, {{ op.min_args }}, {{ -1 if op.max_args is none else op.max_args }})
{%- for k in op.keys %}
{%- if not (op.variadic_keys and k.optional) %}
  local {{ k.name }}_key = KEYS[{{ loop.index }}]
{%- endif %}
{%- endfor %}
{%- for a in op.argv %}
{%- if a.type == 'int' %}
  local {{ a.name }} = prl_int(ARGV, {{ loop.index }}, '{{ a.name }}', {{ a.lo }}, {{ a.hi }}, {{ a.default if a.optional else 'nil' }})
{%- elif a.type == 'str' %}
  local {{ a.name }} = prl_str(ARGV, {{ loop.index }}, '{{ a.name }}', {{ a.lo }}, {{ a.hi }}, {{ "'" ~ a.default ~ "'" if a.optional else 'nil' }})
{%- elif a.type == 'enum' %}
  local {{ a.name }} = prl_enum(ARGV, {{ loop.index }}, '{{ a.name }}', { {%- for c in a.choices %}'{{ c }}'{{ ', ' if not loop.last }}{% endfor -%} }, {{ "'" ~ a.default ~ "'" if a.optional else 'nil' }})
{%- else %}
  local {{ a.name }}_start = {{ loop.index }}
{%- endif %}
{%- endfor %}
{%- endmacro %}
