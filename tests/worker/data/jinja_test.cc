// Unit tests of the chat-template engine (worker/data/jinja): one construct
// per TEST, on templates written here. What transformers renders for real
// published templates is checked by tests/golden/test_chat_templates.py.
#include <ctime>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/data/jinja/template.h"

namespace rigtune::data::jinja {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::ordered_json;

TemplateOptions Named() {
  TemplateOptions options;
  options.source_name = "t.jinja";
  return options;
}

std::string Render(absl::string_view tmpl, const json& vars = json::object()) {
  auto t = Template::Parse(tmpl, Named());
  if (!t.ok()) return "PARSE ERROR: " + std::string(t.status().message());
  auto r = t->Render(vars);
  if (!r.ok()) return "RENDER ERROR: " + std::string(r.status().message());
  return r->text;
}

absl::Status Error(absl::string_view tmpl, const json& vars = json::object(),
                   TemplateOptions options = Named()) {
  auto t = Template::Parse(tmpl, options);
  if (!t.ok()) return t.status();
  return t->Render(vars).status();
}

TEST(JinjaTest, PrintsValuesAsPythonStr) {
  EXPECT_EQ(Render("{{ [1, 'a', none, true, 1.5] }}|{{ {'k': \"it's\"} }}|{{ x }}|{{ 1e-5 }}"),
            "[1, 'a', None, True, 1.5]|{'k': \"it's\"}||1e-05");
}

TEST(JinjaTest, StringLiteralEscapes) {
  EXPECT_EQ(Render(R"({{ 'a\nb\t\'c\u00e9' }})"), "a\nb\t'c\xc3\xa9");
}

TEST(JinjaTest, DashStripsWhitespaceAroundTags) {
  EXPECT_EQ(Render("a  \n {{- 'b' -}} \n c"), "abc");
}

TEST(JinjaTest, TrimBlocksEatsNewlineAfterBlockTag) {
  EXPECT_EQ(Render("{% if true %}\nx\n{% endif %}\ny"), "x\ny");
}

TEST(JinjaTest, LstripBlocksRemovesIndentBeforeBlockTag) {
  EXPECT_EQ(Render("a\n    {% if true %}b{% endif %}\n  {{ 'c' }}"), "a\nb  c");
}

TEST(JinjaTest, PlusDisablesLstrip) {
  EXPECT_EQ(Render("a\n  {%+ if true %}b{% endif %}"), "a\n  b");
}

TEST(JinjaTest, DropsOneTrailingNewline) { EXPECT_EQ(Render("x\n\n"), "x\n"); }

TEST(JinjaTest, CommentsRenderNothing) { EXPECT_EQ(Render("a{# note #}b\n{#- x -#}\nc"), "abc"); }

TEST(JinjaTest, ForLoopVariables) {
  EXPECT_EQ(Render("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
                   "{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ x }};"
                   "{% endfor %}"),
            "103TrueFalse3a;212FalseFalse3ab;321FalseTrue3bc;");
}

TEST(JinjaTest, ForElseRunsWhenNothingIterates) {
  EXPECT_EQ(Render("{% for x in [] %}{{ x }}{% else %}empty{% endfor %}"), "empty");
}

TEST(JinjaTest, ForFilterAndLoopCycle) {
  EXPECT_EQ(Render("{% for x in range(6) if x is odd %}{{ loop.cycle('a', 'b') }}{{ x }}"
                   "{{ loop.length }}{% endfor %}"),
            "a13b33a53");
}

TEST(JinjaTest, BreakAndContinue) {
  EXPECT_EQ(Render("{% for x in range(9) %}{% if x == 1 %}{% continue %}{% endif %}"
                   "{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "023");
}

TEST(JinjaTest, ForUnpacksItems) {
  EXPECT_EQ(Render("{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}",
                   {{"d", {{"b", 1}, {"a", 2}}}}),
            "b=1,a=2,");
}

TEST(JinjaTest, SetInsideLoopDoesNotLeakButNamespaceDoes) {
  EXPECT_EQ(Render("{% set x = 0 %}{% set ns = namespace(n=0) %}{% for i in [1, 2] %}"
                   "{% set x = i %}{% set ns.n = ns.n + i %}{% endfor %}{{ x }}{{ ns.n }}"),
            "03");
}

TEST(JinjaTest, IfElifElse) {
  const std::string t = "{% if x > 1 %}big{% elif x == 1 %}one{% else %}small{% endif %}";
  EXPECT_EQ(Render(t, {{"x", 2}}), "big");
  EXPECT_EQ(Render(t, {{"x", 1}}), "one");
  EXPECT_EQ(Render(t, {{"x", 0}}), "small");
}

TEST(JinjaTest, SetInsideIfIsVisibleAfterIt) {
  EXPECT_EQ(Render("{% if true %}{% set y = 'v' %}{% endif %}{{ y }}"), "v");
}

TEST(JinjaTest, BlockSetWithFilter) {
  EXPECT_EQ(Render("{% set s | upper %} hi {{ 'there' }} {% endset %}[{{ s }}]"), "[ HI THERE ]");
}

TEST(JinjaTest, TupleSet) { EXPECT_EQ(Render("{% set a, b = 1, 2 %}{{ b }}{{ a }}"), "21"); }

TEST(JinjaTest, MacroWithDefaultsAndKeywords) {
  EXPECT_EQ(Render("{% macro m(a, b='B', c=none) %}{{ a }}{{ b }}{{ c }}{% endmacro %}"
                   "{{ m(1) }}|{{ m(1, c=3) }}"),
            "1BNone|1B3");
}

TEST(JinjaTest, CallBlockPassesCaller) {
  EXPECT_EQ(Render("{% macro wrap(tag) %}<{{ tag }}>{{ caller('x') }}</{{ tag }}>{% endmacro %}"
                   "{% call(v) wrap('b') %}in-{{ v }}{% endcall %}"),
            "<b>in-x</b>");
}

TEST(JinjaTest, FilterBlock) { EXPECT_EQ(Render("{% filter trim %}  a  {% endfilter %}|"), "a|"); }

TEST(JinjaTest, FiltersOnStrings) {
  EXPECT_EQ(Render("{{ '  x  ' | trim }}|{{ 'aBc' | upper }}|{{ 'aBc' | lower }}|"
                   "{{ 'hello world' | capitalize }}|{{ \"they're bIG\" | title }}|"
                   "{{ 'aaa' | replace('a', 'b', 2) }}|{{ 'x' | string }}{{ 'é' | length }}|"
                   "{{ '<&>' | safe }}"),
            "x|ABC|abc|Hello world|They'Re Big|bba|x1|<&>");
}

TEST(JinjaTest, FiltersOnLists) {
  EXPECT_EQ(Render("{{ [1, 2, 3] | join('-') }}|{{ [1, 2] | first }}{{ [1, 2] | last }}|"
                   "{{ [3, 1, 2] | sort | list }}|{{ [1, 1, 2] | unique | list }}|{{ 'ab' | list }}|"
                   "{{ [1, 2] | length }}|{{ [1, 2] | reverse | list }}"),
            "1-2-3|12|[1, 2, 3]|[1, 2]|['a', 'b']|2|[2, 1]");
}

TEST(JinjaTest, DefaultFilter) {
  EXPECT_EQ(Render("{{ missing | default('d') }}|{{ '' | default('d') }}|{{ '' | default('d', true) }}"
                   "|{{ none | d('x') }}"),
            "d||d|None");
}

TEST(JinjaTest, MapSelectAndAttrFilters) {
  const json vars = {{"ms", json::array({{{"role", "user"}, {"n", 1}},
                                         {{"role", "tool"}, {"n", 2}},
                                         {{"role", "user"}, {"n", 3}}})}};
  EXPECT_EQ(Render("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='n') | list }}|"
                   "{{ ms | rejectattr('role', '==', 'user') | map(attribute='n') | join }}|"
                   "{{ [1, 2, 3, 4] | select('even') | list }}|{{ [0, 1] | reject | list }}|"
                   "{{ ['a', 'b'] | map('upper') | join }}|{{ ms | map(attribute='x', default=0) | sum }}",
                   vars),
            "[1, 3]|2|[2, 4]|[0]|AB|0");
}

TEST(JinjaTest, ItemsAndDictsortFilters) {
  EXPECT_EQ(Render("{% for k, v in d | items %}{{ k }}{{ v }}{% endfor %}|"
                   "{% for k, v in d | dictsort %}{{ k }}{% endfor %}",
                   {{"d", {{"b", 1}, {"a", 2}}}}),
            "b1a2|ab");
}

TEST(JinjaTest, IntAndIndentFilters) {
  EXPECT_EQ(Render("{{ '42' | int + 1 }}|{{ 'x' | int(7) }}|{{ 3.9 | int }}|"
                   "{{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, true) }}"),
            "43|7|3|a\n  b\n\n  c|  a\n  b");
}

TEST(JinjaTest, ToJsonMatchesPythonJsonDumps) {
  const json vars = {{"v", {{"name", "é\"x"}, {"args", {1, 2.5, nullptr, true}}, {"e", json::object()}}}};
  EXPECT_EQ(Render("{{ v | tojson }}", vars),
            "{\"name\": \"\xc3\xa9\\\"x\", \"args\": [1, 2.5, null, true], \"e\": {}}");
  EXPECT_EQ(Render("{{ v.args | tojson(indent=2) }}", vars), "[\n  1,\n  2.5,\n  null,\n  true\n]");
  EXPECT_EQ(Render("{{ v.name | tojson(ensure_ascii=true) }}", vars), "\"\\u00e9\\\"x\"");
  EXPECT_EQ(Render("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true, separators=(',', ':')) }}"),
            "{\"a\":2,\"b\":1}");
}

TEST(JinjaTest, Tests) {
  EXPECT_EQ(Render("{{ x is defined }}{{ y is defined }}{{ none is none }}{{ 'a' is string }}"
                   "{{ {} is mapping }}{{ [] is iterable }}{{ 1 is string }}{{ false is sameas false }}"
                   "{{ 'a' is in ['a'] }}{{ 1 is not none }}{{ 3 is divisibleby 3 }}",
                   {{"x", 1}}),
            "TrueFalseTrueTrueTrueTrueFalseTrueTrueTrueTrue");
}

TEST(JinjaTest, SlicesCountCharactersNotBytes) {
  EXPECT_EQ(Render("{{ [1, 2, 3, 4][1:] }}{{ [1, 2, 3][::-1] }}{{ [1, 2, 3][:-1] }}"
                   "{{ 'héllo'[1:3] }}{{ 'abc'[-1] }}{{ [1, 2, 3, 4][::2] }}"),
            "[2, 3, 4][3, 2, 1][1, 2]élc[1, 3]");
}

TEST(JinjaTest, StringMethods) {
  EXPECT_EQ(Render("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}|{{ ' a '.strip() }}|"
                   "{{ 'xxaxx'.strip('x') }}|{{ 'a b  c'.split() }}|{{ 'a,b'.split(',') }}|"
                   "{{ ' a '.rstrip() }}|{{ ' a '.lstrip() }}|{{ '{} is {name}'.format(1, name='x') }}|"
                   "{{ 'a</think>b'.split('</think>')[-1] }}"),
            "TrueTrue|a|a|['a', 'b', 'c']|['a', 'b']| a|a |1 is x|b");
}

TEST(JinjaTest, DictMethods) {
  EXPECT_EQ(Render("{{ d.get('a') }}{{ d.get('z') }}{{ d.get('z', 0) }}|{{ d.keys() | list }}|"
                   "{{ d.values() | list }}|{{ d['a'] }}{{ d.a }}",
                   {{"d", {{"a", 1}}}}),
            "1None0|['a']|[1]|11");
}

TEST(JinjaTest, OperatorsFollowPython) {
  EXPECT_EQ(Render("{{ 7 // 2 }}{{ -7 // 2 }}{{ 7 % 3 }}{{ -7 % 3 }}{{ 2 ** 3 }}{{ 7 / 2 }}"
                   "{{ 'a' ~ 1 }}{{ 'a' + 'b' }}{{ [1] + [2] }}{{ 'ab' * 2 }}"),
            "3-41283.5a1ab[1, 2]abab");
  EXPECT_EQ(Render("{{ 'b' in 'abc' }}{{ 2 not in [1] }}{{ 0 or 'x' }}{{ 1 and 'y' }}"
                   "{{ 'yes' if 1 > 2 else 'no' }}{{ not 1 == 1 }}"),
            "TrueTruexynoFalse");
}

TEST(JinjaTest, FiltersBindTighterThanPlus) {
  EXPECT_EQ(Render("{{ ' a ' + ' b ' | trim }}"), " a b");
}

TEST(JinjaTest, GenerationBlocksMarkAssistantSpans) {
  auto t = Template::Parse("A{% generation %}BC{% endgeneration %}D{% generation %}E{% endgeneration %}");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->has_generation_blocks());
  auto r = t->Render(json::object());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "ABCDE");
  EXPECT_EQ(r->generation_spans, (std::vector<std::pair<size_t, size_t>>{{1, 3}, {4, 5}}));
}

TEST(JinjaTest, StrftimeNowUsesLocalTime) {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char year[8];
  std::strftime(year, sizeof(year), "%Y", &local);
  EXPECT_EQ(Render("{{ strftime_now('%Y') }}"), year);
}

TEST(JinjaTest, RaiseExceptionNamesTheLine) {
  const absl::Status s = Error("ok\n{% if true %}\n{{ raise_exception('roles must alternate') }}{% endif %}");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "t.jinja, line 3: the template raised: roles must alternate");
}

TEST(JinjaTest, UnknownFilterFailsAtParseNamingTheLine) {
  const absl::Status s = Error("\n\n{{ x | frobnicate }}");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "t.jinja, line 3: no filter named 'frobnicate'");
}

TEST(JinjaTest, UnknownFilterInsideIfFailsOnlyWhenReached) {
  EXPECT_EQ(Render("{% if false %}{{ x | nope }}{% endif %}ok"), "ok");
  EXPECT_EQ(Error("{% if true %}\n{{ x | nope }}{% endif %}").message(),
            "t.jinja, line 2: no filter named 'nope'");
}

TEST(JinjaTest, SafeStringsEscapeWhatIsAddedToThem) {
  EXPECT_EQ(Render("{{ '<b>' | safe + '<i>' }}|{{ '<i>' ~ '<b>' | safe }}|{{ '\"' | e }}"),
            "<b>&lt;i&gt;|<i><b>|&#34;");
}

TEST(JinjaTest, SyntaxErrorNamesTheLine) {
  const absl::Status s = Error("{% for x in y %}\n{{ x }");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("t.jinja, line 2:"));
}

TEST(JinjaTest, UnclosedBlockNamesItsEndTag) {
  EXPECT_THAT(Error("{% if x %}\nabc").message(), HasSubstr("needs {% endif %}"));
}

TEST(JinjaTest, LoopLimitStopsRunawayTemplates) {
  TemplateOptions options = Named();
  options.limits.max_loop_iterations = 50;
  const absl::Status s =
      Error("{% for i in range(10) %}\n{% for j in range(10) %}{% endfor %}{% endfor %}",
            json::object(), options);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "t.jinja, line 2: the template ran more than 50 loop iterations");
}

TEST(JinjaTest, MacroRecursionIsBounded) {
  EXPECT_THAT(Error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").message(),
              HasSubstr("macro calls nest deeper than 64"));
}

TEST(JinjaTest, OutputSizeIsBounded) {
  TemplateOptions options = Named();
  options.limits.max_output_bytes = 100;
  EXPECT_THAT(Error("{% for i in range(100) %}xx{% endfor %}", json::object(), options).message(),
              HasSubstr("output grew beyond 100 bytes"));
}

TEST(JinjaTest, ValuesBuiltInMemoryAreBounded) {
  EXPECT_THAT(Error("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                    "{% set ns.s = ns.s + ns.s %}{% endfor %}").message(),
              HasSubstr("larger than 16 MiB"));
  EXPECT_THAT(Error("{{ ('x' * 9999999).replace('x', 'yy') }}").message(),
              HasSubstr("larger than 16 MiB"));
  EXPECT_EQ(Render("{{ ([] * 1000000000000) | length }}{{ '' * 1000000000000 }}"), "0");
}

TEST(JinjaTest, TemplateSizeIsBounded) {
  TemplateOptions options = Named();
  options.max_template_bytes = 10;
  EXPECT_THAT(Error(std::string(11, 'x'), json::object(), options).message(),
              HasSubstr("more than the limit of 10"));
}

TEST(JinjaTest, SandboxRefusesMutationAndInternals) {
  EXPECT_THAT(Error("{{ xs.append(1) }}", {{"xs", json::array()}}).message(),
              HasSubstr("unsafe"));
  EXPECT_THAT(Error("{{ d.pop('a') }}", {{"d", {{"a", 1}}}}).message(), HasSubstr("unsafe"));
  EXPECT_EQ(Render("{{ d.__class__ }}|{{ ''.__class__ is defined }}", {{"d", json::object()}}), "|False");
  EXPECT_THAT(Error("{% set ns = namespace() %}{% set ns._x = 1 %}").message(),
              HasSubstr("underscore"));
}

TEST(JinjaTest, UsingUndefinedFailsLikeJinja) {
  EXPECT_EQ(Render("[{{ missing }}]{% for x in missing %}{% endfor %}{{ missing | length }}"), "[]0");
  EXPECT_EQ(Error("{{ missing.field }}").message(), "t.jinja, line 1: 'missing' is undefined");
  EXPECT_THAT(Error("{{ d.a.b }}", {{"d", json::object()}}).message(),
              HasSubstr("'dict object' has no attribute 'a'"));
}

TEST(JinjaTest, ContextVariablesOverrideBuiltins) {
  EXPECT_EQ(Render("{{ range }}", {{"range", "mine"}}), "mine");
}

}  // namespace
}  // namespace rigtune::data::jinja
