using System.Globalization;
using System.Text.Json;
using GpuExecutor.Configuration;
using GpuExecutor.Jobs;
using GpuExecutor.Outcomes;
using GpuExecutor.Simulation;

namespace GpuExecutor.Verbs;

/// <summary>
/// `simulate-pipeline PIPELINE.yml`: plays a .gitlab-ci.yml's jobs in stage order against this
/// executor, as one gpu-executor runner of a GitLab instance would, carrying artifacts between
/// them; jobs for other runners are listed as skipped. Like `simulate`, a tool for the demo and
/// the tests, not a protocol verb: it returns "success" when no job that ran failed.
/// </summary>
public static class SimulatePipelineVerb
{
    private const string Usage = """
        usage: gpu-executor [--config PATH] simulate-pipeline PIPELINE.yml [OPTIONS]
          --repository DIR        where include: local: paths start (default: the current directory)
          --sources DIR           files every job finds in CI_PROJECT_DIR (text files; default: none)
          --runner-tags A,B       the tags of the runner played here (default: gpu)
          --source NAME           CI_PIPELINE_SOURCE: push (default), schedule, trigger, ...
          --variable KEY=VALUE    a pipeline variable, over the file's (repeatable)
          --first-job-id N        the first job's id (default 1000)
          --cancel JOB=SECONDS    cancel that job this long into its first user step
          --result FILE           write each job's outcome as JSON
        """;

    public static async Task<string> RunAsync(string[] args, string configPath, TextWriter stdout, CancellationToken cancel)
    {
        if (args.Length == 0 || args[0].StartsWith("--", StringComparison.Ordinal))
            throw new UsageException(Usage);
        var pipelinePath = Path.GetFullPath(args[0]);
        var repository = Directory.GetCurrentDirectory();
        string? sources = null;
        string? resultPath = null;
        var tags = new HashSet<string>(StringComparer.Ordinal) { "gpu" };
        var source = "push";
        var variables = new Dictionary<string, string>(StringComparer.Ordinal);
        long firstJobId = 1000;
        (string, TimeSpan)? cancelJob = null;
        for (var index = 1; index < args.Length; index += 2)
        {
            if (index + 1 >= args.Length)
                throw new UsageException($"option {args[index]} needs a value.\n{Usage}");
            var value = args[index + 1];
            switch (args[index])
            {
                case "--repository": repository = Path.GetFullPath(value); break;
                case "--sources": sources = Path.GetFullPath(value); break;
                case "--runner-tags": tags = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal); break;
                case "--source": source = value; break;
                case "--variable":
                    var equals = value.IndexOf('=', StringComparison.Ordinal);
                    if (equals <= 0)
                        throw new UsageException($"--variable {value}: use KEY=VALUE.");
                    variables[value[..equals]] = value[(equals + 1)..];
                    break;
                case "--first-job-id": firstJobId = long.Parse(value, CultureInfo.InvariantCulture); break;
                case "--cancel":
                    var at = value.LastIndexOf('=');
                    if (at <= 0 || !double.TryParse(value[(at + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) || seconds < 0)
                        throw new UsageException($"--cancel {value}: use JOB=SECONDS.");
                    cancelJob = (value[..at], TimeSpan.FromSeconds(seconds));
                    break;
                case "--result": resultPath = Path.GetFullPath(value); break;
                default:
                    throw new UsageException($"unknown option {args[index]}.\n{Usage}");
            }
        }

        PipelineDefinition pipeline;
        try
        {
            pipeline = PipelineDefinition.Load(pipelinePath, repository);
        }
        catch (Exception error) when (error is PipelineFileException or IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"cannot play pipeline '{pipelinePath}': {error.Message}");
        }
        // The executor's own config says where a job's project directory lies on this host: that
        // is where artifacts are taken from and put back, as the runner's helper would.
        var config = ConfigLoader.LoadFile(configPath);
        var (executable, prefix) = SimulateVerb.DefaultExecutor();
        var simulator = new SimulatorOptions
        {
            Executable = executable,
            ExecutorArguments = [.. prefix, "--config", Path.GetFullPath(configPath)],
            JobDirectory = Directory.GetCurrentDirectory(),
            PrepareRetryDelay = TimeSpan.FromSeconds(1),
        };
        var artifacts = Directory.CreateTempSubdirectory("gpu-executor-pipeline-artifacts");
        try
        {
            var options = new PipelineOptions
            {
                RunnerTags = tags,
                Source = source,
                Variables = variables,
                Sources = sources,
                FirstJobId = firstJobId,
                Cancel = cancelJob,
                ArtifactsDir = artifacts.FullName,
                ProjectDirOnHost = (jobId, projectPath) => Path.Combine(config.Builds.HostDir, JobWorkspace.BuildsDirPrefix + jobId.ToString(CultureInfo.InvariantCulture), projectPath),
            };
            var results = await new PipelineSimulator(simulator, options, stdout).RunAsync(pipeline, cancel);
            stdout.WriteLine();
            stdout.WriteLine("pipeline summary:");
            foreach (var result in results)
                stdout.WriteLine($"  {result.Stage,-10} {result.Name,-24} {result.Outcome}{(result.Reason is null ? "" : ": " + result.Reason)}");
            if (resultPath is not null)
                await File.WriteAllTextAsync(resultPath, JsonSerializer.Serialize(results.ToList(), SimulationJsonContext.Default.ListPipelineJobResult), CancellationToken.None);
            return results.Any(result => result.Outcome is not ("success" or "skipped")) ? "failed" : "success";
        }
        finally
        {
            artifacts.Delete(recursive: true);
        }
    }
}
