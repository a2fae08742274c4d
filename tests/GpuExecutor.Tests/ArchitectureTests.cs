using System.Reflection;
using NetArchTest.Rules;

namespace GpuExecutor.Tests;

/// <summary>
/// The dependency rule (docs/architecture.md), checked on the compiled assemblies:
///   1. verbs → workflows → capabilities → their interfaces: no capability folder uses a
///      workflow, and the core knows neither verbs, the composition root nor the simulator;
///   2. only the composition root creates adapters: verbs and workflows never name one;
///   3. each SDK package is used by its adapter alone (Docker.DotNet, AWSSDK, CliWrap, Tomlyn;
///      System.CommandLine only by the command line, VerbCommands and CommandLine);
///   4. no cycle between folders (namespaces).
/// </summary>
public sealed class ArchitectureTests
{
    private static readonly Assembly Core = typeof(Workflows.PrepareJob).Assembly;
    private static readonly Assembly Binary = typeof(CommandLine).Assembly;
    private static readonly Assembly Simulator = typeof(Simulation.RunnerSimulator).Assembly;
    private static readonly Assembly[] All = [Core, Binary, Simulator];

    /// <summary>The classes that wrap an SDK or a process; only the composition root constructs them.</summary>
    private static readonly string[] Adapters =
    [
        "GpuExecutor.Containers.DockerContainerDriver",
        "GpuExecutor.Storage.S3ObjectStore",
        "GpuExecutor.Storage.FileObjectStore",
        "GpuExecutor.Gpus.NvidiaSmi",
        "GpuExecutor.Continuation.GitLabClient",
        "GpuExecutor.Composition.CheckpointAgentLauncher",
    ];

    private static string Describe(NetArchTest.Rules.TestResult result) => string.Join(", ", result.FailingTypeNames ?? []);

    [Fact]
    public void Capabilities_never_use_workflows_and_the_core_knows_no_verb_composition_or_simulator()
    {
        var capabilities = Types.InAssembly(Core).That().DoNotResideInNamespace("GpuExecutor.Workflows")
            .ShouldNot().HaveDependencyOn("GpuExecutor.Workflows").GetResult();
        Assert.True(capabilities.IsSuccessful, $"capabilities that use a workflow: {Describe(capabilities)}");

        var core = Types.InAssembly(Core).ShouldNot()
            .HaveDependencyOnAny("GpuExecutor.Verbs", "GpuExecutor.Composition", "GpuExecutor.Simulation", "GpuExecutor.CommandLine").GetResult();
        Assert.True(core.IsSuccessful, $"core types that reach up: {Describe(core)}");
    }

    [Fact]
    public void Only_the_composition_root_names_an_adapter()
    {
        var verbsAndWorkflows = Types.InAssemblies(All).That()
            .ResideInNamespace("GpuExecutor.Verbs").Or().ResideInNamespace("GpuExecutor.Workflows")
            .ShouldNot().HaveDependencyOnAny(Adapters).GetResult();
        Assert.True(verbsAndWorkflows.IsSuccessful, $"verbs or workflows that name an adapter: {Describe(verbsAndWorkflows)}");
    }

    [Theory]
    [InlineData("Docker.DotNet", new[] { "GpuExecutor.Containers.DockerContainerDriver", "GpuExecutor.Containers.DockerSpecConverter" })]
    [InlineData("Amazon", new[] { "GpuExecutor.Storage.S3ObjectStore" })]
    [InlineData("CliWrap", new[] { "GpuExecutor.Gpus.NvidiaSmi", "GpuExecutor.Registration.GitLabRunnerProgram" })]
    [InlineData("Tomlyn", new[] { "GpuExecutor.Configuration.ConfigLoader", "GpuExecutor.Configuration.ConfigTomlContext", "GpuExecutor.Registration.RunnerConfigFile", "GpuExecutor.Registration.RegistrationTomlContext" })]
    [InlineData("System.CommandLine", new[] { "GpuExecutor.CommandLine", "GpuExecutor.VerbCommands" })]
    public void Each_SDK_is_used_by_its_adapter_alone(string sdk, string[] adapters)
    {
        var users = Types.InAssemblies(All).ShouldNot().HaveDependencyOn(sdk).GetResult().FailingTypeNames ?? [];
        // The adapter's own nested types (an async state machine, a wrapped stream) are the adapter.
        var others = users.Where(name => !adapters.Any(adapter => name == adapter || name.StartsWith(adapter + "/", StringComparison.Ordinal))).ToList();
        Assert.True(others.Count == 0, $"types outside {string.Join(", ", adapters)} that use {sdk}: {string.Join(", ", others)}");
        Assert.NotEmpty(users);
    }

    [Fact]
    public void No_two_folders_depend_on_each_other_even_through_others()
    {
        var folders = All.SelectMany(assembly => assembly.GetTypes())
            .Select(type => type.Namespace)
            .Where(space => space is not null && space.StartsWith("GpuExecutor", StringComparison.Ordinal))
            .Select(space => space!)
            .Distinct()
            .Order(StringComparer.Ordinal)
            .ToList();
        var uses = folders.ToDictionary(folder => folder, folder => folders.Where(other => other != folder && DependsOn(folder, other)).ToList());

        var cycle = FindCycle(uses);
        Assert.True(cycle is null, $"folders in a cycle: {string.Join(" -> ", cycle ?? [])}");
    }

    /// <summary>
    /// Whether a type of <paramref name="folder"/> uses a type of <paramref name="other"/>. By the
    /// other folder's type names, not its namespace: HaveDependencyOn matches names by prefix, and
    /// "GpuExecutor.Jobs" would also match "GpuExecutor.JobLog".
    /// </summary>
    private static bool DependsOn(string folder, string other)
    {
        var typesOfOther = All.SelectMany(assembly => assembly.GetTypes())
            .Where(type => type.Namespace == other && !type.Name.StartsWith('<'))
            .Select(type => type.FullName!.Split('`')[0].Replace('+', '/'))
            .Distinct()
            .ToArray();
        return typesOfOther.Length > 0 && !Types.InAssemblies(All).That()
            .ResideInNamespaceMatching($"^{System.Text.RegularExpressions.Regex.Escape(folder)}$")
            .ShouldNot().HaveDependencyOnAny(typesOfOther).GetResult().IsSuccessful;
    }

    private static List<string>? FindCycle(Dictionary<string, List<string>> uses)
    {
        var state = new Dictionary<string, int>();
        var path = new List<string>();
        List<string>? Visit(string node)
        {
            state[node] = 1;
            path.Add(node);
            foreach (var next in uses[node])
            {
                if (state.GetValueOrDefault(next) == 1)
                    return [.. path[path.IndexOf(next)..], next];
                if (state.GetValueOrDefault(next) == 0 && Visit(next) is { } found)
                    return found;
            }
            path.RemoveAt(path.Count - 1);
            state[node] = 2;
            return null;
        }
        foreach (var node in uses.Keys)
        {
            if (state.GetValueOrDefault(node) == 0 && Visit(node) is { } cycle)
                return cycle;
        }
        return null;
    }
}
