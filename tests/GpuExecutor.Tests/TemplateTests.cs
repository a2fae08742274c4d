using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace GpuExecutor.Tests;

/// <summary>
/// The CI components in templates/, read with a real YAML parser: each is a component (a spec
/// document with inputs, each described, then the jobs), uses only the inputs it declares and
/// declares none it does not use, and sets only job variables the README documents.
/// (TemplatePipelineTests checks them against GitLab's schema with gitlab-ci-local.)
/// </summary>
public sealed partial class TemplateTests
{
    public static TheoryData<string> Templates() =>
        new(Directory.GetFiles(Path.Combine(RepositoryRoot.Path, "templates"), "*.yml").Select(Path.GetFileName).Order(StringComparer.Ordinal)!);

    [GeneratedRegex(@"\$\[\[\s*inputs\.([a-z_]+)\s*\]\]")]
    private static partial Regex InputReference();

    private static (YamlMappingNode Spec, YamlMappingNode Jobs, string Text) Read(string name)
    {
        var text = File.ReadAllText(Path.Combine(RepositoryRoot.Path, "templates", name));
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        Assert.True(stream.Documents.Count == 2, $"{name}: a component is a spec document, then '---', then its jobs");
        return ((YamlMappingNode)stream.Documents[0].RootNode, (YamlMappingNode)stream.Documents[1].RootNode, text);
    }

    private static YamlMappingNode Inputs(YamlMappingNode spec) =>
        (YamlMappingNode)((YamlMappingNode)spec.Children[new YamlScalarNode("spec")]).Children[new YamlScalarNode("inputs")];

    /// <summary>The variables the README's "Job variables" section documents: its tables' first column.</summary>
    private static HashSet<string> DocumentedJobVariables()
    {
        var readme = File.ReadAllText(Path.Combine(RepositoryRoot.Path, "README.md"));
        var start = readme.IndexOf("\n## Job variables", StringComparison.Ordinal);
        var end = readme.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        Assert.True(start >= 0 && end > start, "the README has no Job variables section");
        return DocumentedVariable().Matches(readme[start..end]).Select(match => match.Groups[1].Value).ToHashSet(StringComparer.Ordinal);
    }

    [GeneratedRegex(@"^\| `([A-Z][A-Z0-9_]*)` \|", RegexOptions.Multiline)]
    private static partial Regex DocumentedVariable();

    [Theory]
    [MemberData(nameof(Templates))]
    public void A_template_is_a_component_whose_inputs_are_described_declared_and_used(string name)
    {
        var (spec, jobs, text) = Read(name);
        var inputs = Inputs(spec);
        Assert.NotEmpty(inputs.Children);
        foreach (var (key, value) in inputs.Children)
        {
            var input = Assert.IsType<YamlMappingNode>(value);
            Assert.True(input.Children.ContainsKey(new YamlScalarNode("description")), $"{name}: input '{key}' has no description");
        }
        var declared = inputs.Children.Keys.Select(key => ((YamlScalarNode)key).Value!).ToHashSet(StringComparer.Ordinal);
        var jobText = text[text.IndexOf("\n---", StringComparison.Ordinal)..];
        var used = InputReference().Matches(jobText).Select(match => match.Groups[1].Value).ToHashSet(StringComparer.Ordinal);
        Assert.Empty(used.Except(declared));
        Assert.Empty(declared.Except(used));
        Assert.NotEmpty(jobs.Children);
    }

    [Theory]
    [MemberData(nameof(Templates))]
    public void A_template_sets_only_job_variables_the_README_documents(string name)
    {
        var (_, jobs, _) = Read(name);
        var documented = DocumentedJobVariables();
        // GitLab's and Docker's own, which the component passes to the services they configure.
        var platform = new HashSet<string>(StringComparer.Ordinal) { "DOCKER_TLS_CERTDIR" };
        foreach (var (jobName, job) in jobs.Children)
        {
            if (job is not YamlMappingNode mapping || !mapping.Children.TryGetValue(new YamlScalarNode("variables"), out var variables))
                continue;
            foreach (var variable in ((YamlMappingNode)variables).Children.Keys.Select(key => ((YamlScalarNode)key).Value!))
                Assert.True(documented.Contains(variable) || platform.Contains(variable), $"{name}: job {jobName} sets {variable}, which the README's Job variables do not document");
        }
    }

    [Fact]
    public void The_check_of_variables_knows_the_README_s_job_variables()
    {
        // The README parse the variable check stands on finds what it must, and no more.
        var documented = DocumentedJobVariables();
        Assert.Superset(new HashSet<string> { "GPU_COUNT", "GPU_MODEL", "DATASETS", "CHECKPOINTS", "CHECKPOINT_RUN_KEY", "CHECKPOINT_CONTINUE" }, documented);
        Assert.DoesNotContain("EPOCHS", documented);
    }
}
