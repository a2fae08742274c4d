namespace GpuExecutor.Configuration;

/// <summary>
/// Continuation: a run that reaches its job's deadline is retried through the GitLab API once the
/// job has ended, and the retry resumes from the newest checkpoint. Off unless a URL and a token are set.
/// </summary>
public sealed record ContinuationSettings
{
    /// <summary>The GitLab instance (https://gitlab.example.com). From the config only: a job's own variables could point it elsewhere, and the token would go there.</summary>
    public Uri? GitLabUrl { get; init; }

    /// <summary>A token that may retry the project's jobs (the api scope, Developer role or more).</summary>
    public Secret? Token { get; init; }

    /// <summary>The most jobs one chain may take, the first included.</summary>
    public int MaxSegments { get; init; } = 10;

    /// <summary>How long the agent waits for GitLab to mark the job ended before it gives up on continuing it.</summary>
    public TimeSpan JobEndWait { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>How often the agent asks GitLab whether the job has ended.</summary>
    public TimeSpan JobEndPollInterval { get; init; } = TimeSpan.FromSeconds(3);

    public bool Enabled => GitLabUrl is not null && Token is not null;
}
