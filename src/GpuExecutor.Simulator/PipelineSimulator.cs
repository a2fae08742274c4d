using System.Text.RegularExpressions;

namespace GpuExecutor.Simulation;

/// <summary>How one job of a pipeline went: its outcome, or why it did not run.</summary>
public sealed record PipelineJobResult(
    [property: System.Text.Json.Serialization.JsonPropertyName("name")] string Name,
    [property: System.Text.Json.Serialization.JsonPropertyName("stage")] string Stage,
    [property: System.Text.Json.Serialization.JsonPropertyName("outcome")] string Outcome,
    [property: System.Text.Json.Serialization.JsonPropertyName("reason")] string? Reason,
    [property: System.Text.Json.Serialization.JsonPropertyName("job_id")] long? JobId);

public sealed record PipelineOptions
{
    /// <summary>The tags of the runner the simulator plays: a job runs here when it asks for no other tag.</summary>
    public IReadOnlySet<string> RunnerTags { get; init; } = new HashSet<string>(StringComparer.Ordinal) { "gpu" };

    /// <summary>CI_PIPELINE_SOURCE: push, schedule, trigger, …</summary>
    public string Source { get; init; } = "push";

    /// <summary>Pipeline variables (as a trigger or a schedule sets them): they win over the file's.</summary>
    public IReadOnlyDictionary<string, string> Variables { get; init; } = new Dictionary<string, string>();

    /// <summary>Files every job finds in CI_PROJECT_DIR, standing in for the repository (text files).</summary>
    public string? Sources { get; init; }

    /// <summary>The host directory where the executor keeps job N's project directory (its builds host dir), to carry artifacts.</summary>
    public required Func<long, string, string> ProjectDirOnHost { get; init; }

    /// <summary>Where the pipeline keeps the artifacts between jobs.</summary>
    public required string ArtifactsDir { get; init; }

    public long FirstJobId { get; init; } = 1000;

    /// <summary>Cancel this job this long into its first user step, as someone pressing Cancel would.</summary>
    public (string Job, TimeSpan After)? Cancel { get; init; }
}

/// <summary>
/// Plays a pipeline the way GitLab would on one runner: the jobs in stage order, each through the
/// runner simulator and so the executor, with `artifacts: paths:` kept after a job and given to
/// the jobs that need them (or, without `needs`, to every later stage's), placed in the project
/// directory after get_sources, as the runner's download_artifacts does. A job this runner cannot
/// take (its tags ask for another runner), a manual one, one whose rules do not match, and one
/// whose needs did not succeed are listed as skipped, with the reason.
/// </summary>
public sealed partial class PipelineSimulator(SimulatorOptions simulator, PipelineOptions options, TextWriter log)
{
    public async Task<IReadOnlyList<PipelineJobResult>> RunAsync(PipelineDefinition pipeline, CancellationToken cancel)
    {
        var results = new List<PipelineJobResult>();
        var jobId = options.FirstJobId;
        var stageOrder = pipeline.Stages.ToList();
        // What rules see, and what each job gets with its own variables between: the pipeline's
        // variables win over the file's, as a trigger's or a schedule's do.
        var source = new Dictionary<string, string> { ["CI_PIPELINE_SOURCE"] = options.Source };
        var ruleVariables = Merged(pipeline.Variables, source, options.Variables);
        foreach (var job in pipeline.Jobs)
        {
            var earlier = results.Where(result => stageOrder.IndexOf(result.Stage) < stageOrder.IndexOf(job.Stage)).ToList();
            var reason = SkipReason(job, ruleVariables, results, earlier);
            if (reason is not null)
            {
                log.WriteLine($"pipeline: {job.Name} ({job.Stage}) skipped: {reason}");
                results.Add(new PipelineJobResult(job.Name, job.Stage, "skipped", reason, null));
                continue;
            }

            var id = jobId++;
            log.WriteLine($"pipeline: {job.Name} ({job.Stage}) runs as job {id}");
            // Without needs, the artifacts of every earlier stage's jobs, as GitLab's default dependencies.
            var withArtifacts = job.Needs?.Where(need => need.Artifacts).Select(need => need.Job).ToList() ?? earlier.Select(result => result.Name).ToList();
            var simulated = new SimulatedJob
            {
                JobId = id,
                Name = job.Name,
                Stage = job.Stage,
                Image = job.Image,
                Variables = Merged(pipeline.Variables, job.Variables, options.Variables, source),
                Script = [.. job.Script],
                AfterScript = [.. job.AfterScript],
                Timeout = job.TimeoutSeconds,
                Sources = options.Sources,
            };
            var projectDir = options.ProjectDirOnHost(id, simulated.ProjectPath);
            var runner = new RunnerSimulator(simulator with
            {
                CancelAfter = options.Cancel is { } cancelling && cancelling.Job == job.Name ? cancelling.After : null,
                AfterSources = () => PlaceArtifacts(withArtifacts, projectDir),
                BeforeCleanup = () => KeepArtifacts(job, projectDir),
            }, log);
            var result = await runner.RunAsync(simulated, cancel);
            log.WriteLine($"pipeline: {job.Name} ({job.Stage}): {result.Outcome}");
            results.Add(new PipelineJobResult(job.Name, job.Stage, result.Outcome, result.Outcome == "success" ? null : result.Message, id));
            if (cancel.IsCancellationRequested)
                break;
        }
        return results;
    }

    /// <summary>The variables in order, a later one winning over an earlier one of the same name.</summary>
    private static Dictionary<string, string> Merged(params IReadOnlyDictionary<string, string>[] layers)
    {
        var merged = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var layer in layers)
            foreach (var (key, value) in layer)
                merged[key] = value;
        return merged;
    }

    private string? SkipReason(PipelineJob job, IReadOnlyDictionary<string, string> variables, List<PipelineJobResult> results, List<PipelineJobResult> earlier)
    {
        if (job.RuleConditions.Count > 0 && !job.RuleConditions.Any(condition => Matches(condition, variables)))
            return $"its rules match no condition here ({string.Join("; ", job.RuleConditions)}) with CI_PIPELINE_SOURCE={variables["CI_PIPELINE_SOURCE"]}";
        if (job.When == "manual")
            return "manual: it waits for someone to start it in GitLab";
        if (job.When == "never")
            return "when: never";
        // Another runner's job is GitLab's to place, whatever happens to its needs here.
        var otherTags = job.Tags.Where(tag => !options.RunnerTags.Contains(tag)).ToList();
        if (otherTags.Count > 0)
            return $"GitLab-only here: it needs a runner tagged {string.Join(", ", otherTags)}, and this simulator plays the gpu-executor runner tagged {string.Join(", ", options.RunnerTags.Order(StringComparer.Ordinal))}";
        if (job.Needs is null)
            // Without needs, a job waits for the earlier stages, where a skipped job blocks nothing.
            return job.When != "always" && earlier.Any(result => result.Outcome is not ("success" or "skipped")) ? "an earlier stage failed" : null;
        foreach (var (name, _) in job.Needs)
        {
            var need = results.FirstOrDefault(result => result.Name == name);
            if (need is null)
                return $"it needs {name}, which is not in this pipeline";
            if (need.Outcome != "success" && job.When != "always")
                return $"it needs {name}, which {(need.Outcome == "skipped" ? "did not run" : need.Outcome)}";
        }
        return null;
    }

    /// <summary>The rules forms the simulator evaluates: $VAR == "value", $VAR != "value", and $VAR alone; anything else does not match.</summary>
    private static bool Matches(string condition, IReadOnlyDictionary<string, string> variables)
    {
        var comparison = Comparison().Match(condition.Trim());
        if (comparison.Success)
        {
            var actual = variables.GetValueOrDefault(comparison.Groups[1].Value, "");
            return comparison.Groups[2].Value == "==" ? actual == comparison.Groups[3].Value : actual != comparison.Groups[3].Value;
        }
        var presence = Presence().Match(condition.Trim());
        return presence.Success && variables.GetValueOrDefault(presence.Groups[1].Value, "").Length > 0;
    }

    private Task PlaceArtifacts(IEnumerable<string> jobs, string projectDir)
    {
        foreach (var job in jobs)
        {
            var kept = Path.Combine(options.ArtifactsDir, job);
            if (Directory.Exists(kept))
                CopyTree(kept, projectDir);
        }
        return Task.CompletedTask;
    }

    private Task KeepArtifacts(PipelineJob job, string projectDir)
    {
        foreach (var path in job.ArtifactPaths)
        {
            // Paths stay inside the project directory, as GitLab's do.
            var relative = path.TrimEnd('/');
            var source = Path.GetFullPath(Path.Combine(projectDir, relative));
            if (!source.StartsWith(Path.GetFullPath(projectDir).TrimEnd('/') + "/", StringComparison.Ordinal))
            {
                log.WriteLine($"pipeline: {job.Name}: artifact path {path} leaves the project directory and is not kept");
                continue;
            }
            var target = Path.Combine(options.ArtifactsDir, job.Name, relative);
            if (Directory.Exists(source))
                CopyTree(source, target);
            else if (File.Exists(source))
            {
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(source, target, overwrite: true);
            }
            else
                log.WriteLine($"pipeline: {job.Name}: artifact path {path} matched no file");
        }
        return Task.CompletedTask;
    }

    private static void CopyTree(string source, string target)
    {
        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            var destination = Path.Combine(target, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
            File.Copy(file, destination, overwrite: true);
        }
    }

    [GeneratedRegex("""^\$([A-Za-z_][A-Za-z0-9_]*)\s*(==|!=)\s*["']([^"']*)["']$""")]
    private static partial Regex Comparison();

    [GeneratedRegex(@"^\$([A-Za-z_][A-Za-z0-9_]*)$")]
    private static partial Regex Presence();
}
