using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using GpuExecutor.Checkpoints;
using GpuExecutor.Configuration;
using GpuExecutor.Continuation;
using GpuExecutor.JobLog;
using GpuExecutor.Protocol;
using GpuExecutor.Storage;

namespace GpuExecutor.Workflows;

/// <summary>The MLflow run of a training run, kept beside its checkpoints so that every host finds it.</summary>
public sealed record TrackedMlflowRun(
    [property: JsonPropertyName("tracking_uri")] string TrackingUri,
    [property: JsonPropertyName("experiment_id")] string ExperimentId,
    [property: JsonPropertyName("run_id")] string RunId);

[JsonSerializable(typeof(TrackedMlflowRun))]
internal sealed partial class TrackingJsonContext : JsonSerializerContext;

/// <summary>
/// Experiment tracking in GitLab's MLflow-compatible API (mlflow.tracking = "gitlab"): a training
/// run is one MLflow run across all its jobs. Prepare finds the run the training run's record
/// names, or creates it, records it in the checkpoint store, tags it with this job, and gives the
/// job MLFLOW_TRACKING_URI and MLFLOW_RUN_ID, which the mlflow client's start_run() honours.
/// The token is the job's own (mlflow.token_variable) and goes nowhere but the API's header. A
/// GitLab that does not answer costs the job its tracking, never its training.
/// </summary>
public sealed class ExperimentTracking(ExecutorConfig config, IObjectStoreOpener stores, GitLabMlflowOpener? openGitLab, TextWriter log)
{
    public const string RecordName = "MLFLOW.json";
    private const int LargestRecord = 4096;

    /// <summary>The GitLab instance whose API serves MLflow, from trusted places only (see <see cref="MlflowSettings.GitLabUrl"/>).</summary>
    public Uri? GitLabUrl(JobPayload payload) => config.Mlflow.GitLabUrl ?? config.Continuation.GitLabUrl ?? FromRepositoryUrl(payload);

    /// <summary>
    /// The instance's base URL from the payload's repository URL, which GitLab writes
    /// (https://gitlab-ci-token:…@host/relative/root/group/project.git): what precedes the
    /// project's path, without the credentials.
    /// </summary>
    public static Uri? FromRepositoryUrl(JobPayload payload)
    {
        var projectPath = "/" + payload.JobInfo.ProjectFullPath.Trim('/');
        if (projectPath.Length < 2 || !Uri.TryCreate(payload.GitInfo.RepoUrl, UriKind.Absolute, out var repository) || repository.Scheme is not ("http" or "https"))
            return null;
        var path = repository.AbsolutePath;
        foreach (var suffix in new[] { projectPath + ".git", projectPath })
        {
            if (path.EndsWith(suffix, StringComparison.Ordinal))
                return new UriBuilder(repository.Scheme, repository.Host, repository.Port, path[..^suffix.Length] + "/").Uri;
        }
        return null;
    }

    /// <summary>
    /// The job's tracking variables, or none (tracking off, no token, or GitLab not answering; the
    /// log says which). <paramref name="adoptedJobId"/>: this job follows that job's training.
    /// </summary>
    public async Task<Dictionary<string, string>> AttachAsync(JobPayload payload, JobIdentity job, string? restoredGeneration, long? adoptedJobId, CancellationToken cancellationToken)
    {
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!config.Mlflow.Enabled)
            return environment;
        using var section = JobLogSection.Start(log, "gpu_executor_mlflow", "Experiment tracking (MLflow in GitLab)", collapsed: true);
        var variable = config.Mlflow.TokenVariable;
        if (!payload.VariableMap().TryGetValue(variable, out var token) || token.Length == 0)
        {
            log.WriteLine($"  this runner tracks runs in GitLab's MLflow, but the job has no {variable} variable: add a project access token with the api scope as a masked CI/CD variable of that name. The job trains untracked.");
            return environment;
        }
        if (!Secret.CanBeToken(token))
        {
            log.WriteLine($"  {variable} holds whitespace or a control character, so it is no token: the job trains untracked.");
            return environment;
        }
        if (openGitLab is null)
        {
            log.WriteLine("  this executor cannot reach GitLab from here: the job trains untracked.");
            return environment;
        }
        if (GitLabUrl(payload) is not { } gitLab)
        {
            log.WriteLine("  the GitLab instance is unknown (set mlflow.gitlab_url): the job trains untracked.");
            return environment;
        }

        var projectId = payload.JobInfo.ProjectId;
        using var client = openGitLab(gitLab, new Secret(token), line => log.WriteLine("  " + line));
        var trackingUri = client.MlflowTrackingUri(projectId).AbsoluteUri;
        var (store, repository) = CheckpointStores.Open(stores, config, job.RunKey, line => log.WriteLine("  " + line));
        using var _ = store;
        try
        {
            var tracked = await FindRecordedAsync(client, repository, projectId, trackingUri, cancellationToken);
            if (tracked is null)
            {
                var experimentId = await client.FindMlflowExperimentAsync(projectId, config.Mlflow.Experiment, cancellationToken)
                    ?? await client.CreateMlflowExperimentAsync(projectId, config.Mlflow.Experiment, cancellationToken);
                var runId = await client.CreateMlflowRunAsync(projectId, experimentId, job.RunKey,
                    new Dictionary<string, string> { ["gpu_executor.run_key"] = job.RunKey, ["gpu_executor.first_job"] = Text(job.JobId) }, cancellationToken);
                tracked = new TrackedMlflowRun(trackingUri, experimentId, runId);
                await repository.WriteRunRecordAsync(RecordName, JsonSerializer.SerializeToUtf8Bytes(tracked, TrackingJsonContext.Default.TrackedMlflowRun), cancellationToken);
                log.WriteLine($"  created MLflow run {tracked.RunId} for training run {job.RunKey} in experiment '{config.Mlflow.Experiment}' ({experimentId}).");
            }
            else
                log.WriteLine($"  MLflow run {tracked.RunId} of training run {job.RunKey} goes on.");

            // This job's segment is written already (restore, or adoption, came first).
            var segments = Math.Max((await repository.ListRunRecordsAsync("segments/", cancellationToken)).Count, 1);
            var what = adoptedJobId is { } adopted
                ? $"adopted job {Text(adopted)}'s running training on {config.HostName}"
                : $"segment {Text(segments)} on {config.HostName}, restored generation {(string.IsNullOrEmpty(restoredGeneration) ? "none" : restoredGeneration)}";
            await client.SetMlflowTagAsync(projectId, tracked.RunId, "gpu_executor.job." + Text(job.JobId), what, cancellationToken);
            await client.SetMlflowTagAsync(projectId, tracked.RunId, "gpu_executor.segments", Text(segments), cancellationToken);
            log.WriteLine($"  this job: {what}. The job gets MLFLOW_TRACKING_URI={trackingUri} and MLFLOW_RUN_ID={tracked.RunId}; mlflow's start_run() continues that run.");
            environment["MLFLOW_TRACKING_URI"] = trackingUri;
            environment["MLFLOW_RUN_ID"] = tracked.RunId;
            environment["MLFLOW_EXPERIMENT_ID"] = tracked.ExperimentId;
        }
        catch (Exception error) when (error is GitLabApiException or ObjectStoreException)
        {
            log.WriteLine($"  WARNING: experiment tracking is off for this job: {error.Message}. The training goes on untracked.");
            environment.Clear();
        }
        return environment;
    }

    /// <summary>The run the record names, if it is still there; null when there is none to go on with.</summary>
    private async Task<TrackedMlflowRun?> FindRecordedAsync(IGitLabMlflow client, CheckpointRepository repository, long projectId, string trackingUri, CancellationToken cancellationToken)
    {
        if (await repository.ReadRunRecordAsync(RecordName, LargestRecord, cancellationToken) is not { } bytes)
            return null;
        TrackedMlflowRun? recorded;
        try
        {
            recorded = JsonSerializer.Deserialize(bytes, TrackingJsonContext.Default.TrackedMlflowRun);
        }
        catch (JsonException)
        {
            log.WriteLine($"  WARNING: the run's {RecordName} is not what this executor writes; a new MLflow run is created.");
            return null;
        }
        if (recorded is null || recorded.TrackingUri != trackingUri)
            return null;
        if (await client.MlflowRunExistsAsync(projectId, recorded.RunId, cancellationToken))
            return recorded;
        log.WriteLine($"  WARNING: MLflow run {recorded.RunId} that the run's record names is gone from GitLab; a new one is created.");
        return null;
    }

    private static string Text(long number) => number.ToString(CultureInfo.InvariantCulture);
}
