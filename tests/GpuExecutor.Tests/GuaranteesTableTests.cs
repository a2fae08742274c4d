using System.Text.RegularExpressions;

namespace GpuExecutor.Tests;

/// <summary>
/// The README's guarantees table says, for each event, which test proves it: every row must
/// name at least one test, and every test it names must exist, so the table cannot drift from
/// the suite.
/// </summary>
public sealed partial class GuaranteesTableTests
{
    [Fact]
    public void Every_row_of_the_guarantees_table_names_tests_that_exist()
    {
        var readme = File.ReadAllText(Path.Combine(RepositoryRoot.Path, "README.md"));
        var section = readme[readme.IndexOf("\n## Guarantees\n", StringComparison.Ordinal)..];
        section = section[..section.IndexOf("\n## ", 1, StringComparison.Ordinal)];
        var rows = section.Split('\n').Where(line => line.StartsWith("| ", StringComparison.Ordinal)).Skip(2).ToList();
        Assert.True(rows.Count >= 20, $"the table has {rows.Count} rows");

        var testSources = Directory.EnumerateFiles(Path.Combine(RepositoryRoot.Path, "tests"), "*.cs", SearchOption.AllDirectories)
            .Where(path => !path.Contains("/obj/", StringComparison.Ordinal) && !path.Contains("/bin/", StringComparison.Ordinal))
            .GroupBy(path => Path.GetFileNameWithoutExtension(path))
            .ToDictionary(group => group.Key, group => string.Concat(group.Select(File.ReadAllText)));
        foreach (var row in rows)
        {
            var cells = row.Split(" | ");
            var provedBy = cells[^1];
            var named = TestName().Matches(provedBy).ToList();
            Assert.True(named.Count > 0, $"the row '{cells[0].TrimStart('|', ' ')}' names no test");
            foreach (var test in named)
            {
                var (testClass, method) = (test.Groups[1].Value, test.Groups[2].Value);
                Assert.True(testSources.TryGetValue(testClass, out var source), $"no test class {testClass} (row '{cells[0].TrimStart('|', ' ')}')");
                Assert.True(Regex.IsMatch(source, $@"\[(Fact|Theory)[^\]]*\](\s*\[[^\n]*\])*\s*public (async Task|void) {Regex.Escape(method)}\("), $"no test {testClass}.{method}");
            }
        }
    }

    [GeneratedRegex(@"`([A-Z][A-Za-z]+Tests)\.([A-Za-z0-9_]+)`")]
    private static partial Regex TestName();
}
