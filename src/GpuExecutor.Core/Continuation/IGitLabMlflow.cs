namespace GpuExecutor.Continuation;

/// <summary>
/// The calls of GitLab's MLflow-compatible API (/projects/:id/ml/mlflow) that experiment tracking
/// needs. <see cref="GitLabClient"/> is the one implementation.
/// </summary>
public interface IGitLabMlflow : IDisposable
{
    /// <summary>The project's MLflow tracking URI, as the mlflow client takes it.</summary>
    Uri MlflowTrackingUri(long projectId);

    /// <summary>The experiment's id, or null when there is none of that name.</summary>
    Task<string?> FindMlflowExperimentAsync(long projectId, string name, CancellationToken cancellationToken);

    Task<string> CreateMlflowExperimentAsync(long projectId, string name, CancellationToken cancellationToken);

    /// <summary>A new run in the experiment; returns its id.</summary>
    Task<string> CreateMlflowRunAsync(long projectId, string experimentId, string runName, IReadOnlyDictionary<string, string> tags, CancellationToken cancellationToken);

    /// <summary>False when the run is gone (deleted in GitLab, say).</summary>
    Task<bool> MlflowRunExistsAsync(long projectId, string runId, CancellationToken cancellationToken);

    Task SetMlflowTagAsync(long projectId, string runId, string key, string value, CancellationToken cancellationToken);
}

/// <summary>Opens the MLflow API of a GitLab instance with a job's token: the composition root's choice of client.</summary>
public delegate IGitLabMlflow GitLabMlflowOpener(Uri gitLab, Configuration.Secret token, Action<string> log);
