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
    /// <summary>What `simulate-pipeline` was asked, as <see cref="VerbCommands"/> parsed it; null means the default.</summary>
    public sealed record Request(string PipelineFile, string? Repository, string? Sources, string? RunnerTags, string? Source,
        IReadOnlyList<string> Variables, long? FirstJobId, string? Cancel, string? ResultFile);

    public static async Task<string> RunAsync(Request request, string configPath, TextWriter stdout, CancellationToken cancel)
    {
        var pipelinePath = Path.GetFullPath(request.PipelineFile);
        var repository = Path.GetFullPath(request.Repository ?? Directory.GetCurrentDirectory());
        var sources = request.Sources is null ? null : Path.GetFullPath(request.Sources);
        var resultPath = request.ResultFile is null ? null : Path.GetFullPath(request.ResultFile);
        var tags = (request.RunnerTags ?? "gpu").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal);
        var source = request.Source ?? "push";
        var firstJobId = request.FirstJobId ?? 1000;
        var variables = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var variable in request.Variables)
        {
            var equals = variable.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
                throw new UsageException($"--variable {variable}: use KEY=VALUE.");
            variables[variable[..equals]] = variable[(equals + 1)..];
        }
        (string, TimeSpan)? cancelJob = null;
        if (request.Cancel is { } cancelText)
        {
            var at = cancelText.LastIndexOf('=');
            if (at <= 0 || !double.TryParse(cancelText[(at + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) || seconds < 0)
                throw new UsageException($"--cancel {cancelText}: use JOB=SECONDS.");
            cancelJob = (cancelText[..at], TimeSpan.FromSeconds(seconds));
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
