namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The CI components and the example pipeline that includes them, read by gitlab-ci-local (the
/// test bed installs it from npm), which expands the includes and their inputs and validates
/// the result against GitLab's own CI schema. It reads the files git tracks, so the test runs it
/// in a copy that is a repository of its own.
/// </summary>
public sealed class TemplatePipelineTests
{
    private static string GitLabCiLocal => Environment.GetEnvironmentVariable("GPU_EXECUTOR_GITLAB_CI_LOCAL") ?? "";

    private static async Task<string> CopyAsRepositoryAsync()
    {
        var root = Directory.CreateTempSubdirectory("gpu-executor-pipeline").FullName;
        foreach (var folder in new[] { "templates", Path.Combine("examples", "mlops") })
        {
            var target = Directory.CreateDirectory(Path.Combine(root, folder)).FullName;
            foreach (var file in Directory.GetFiles(Path.Combine(Testbed.RepositoryRoot, folder), "*", new EnumerationOptions { AttributesToSkip = 0 }))
                File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
        }
        foreach (var arguments in new[] { new[] { "init", "--quiet" }, ["add", "--all"] })
        {
            var (exitCode, stdout, stderr) = await Testbed.RunAsync("git", arguments, null, root);
            Assert.True(exitCode == 0, $"git {string.Join(' ', arguments)}: {stdout}{stderr}");
        }
        return root;
    }

    private static async Task<string> ListAsync(string root, params string[] extra)
    {
        var (exitCode, stdout, stderr) = await Testbed.RunAsync(GitLabCiLocal, ["--file", "examples/mlops/.gitlab-ci.yml", "--list", .. extra], null, root, TimeSpan.FromMinutes(2));
        Assert.True(exitCode == 0, $"gitlab-ci-local failed ({exitCode}):\n{stdout}{stderr}");
        return stdout;
    }

    [Fact]
    public async Task The_example_pipeline_with_the_components_included_is_valid_for_GitLab_and_lists_every_job_in_stage_order()
    {
        if (!File.Exists(GitLabCiLocal))
            Testbed.Missing("needs gitlab-ci-local from the test bed (GPU_EXECUTOR_GITLAB_CI_LOCAL); run scripts/test.sh");
        var root = await CopyAsRepositoryAsync();
        try
        {
            var listed = await ListAsync(root);
            // The table after its header line ("name description stage when allow_failure needs"); no job has a description.
            var jobs = listed.Split('\n').SkipWhile(line => !line.StartsWith("name ", StringComparison.Ordinal)).Skip(1).Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries)).Where(parts => parts.Length >= 2).ToList();
            var order = jobs.Select(parts => parts[0]).ToList();
            Assert.Equal(["train", "evaluate", "register-model", "package-serving-image", "deploy", "batch-inference", "serving-check", "cleanup"], order);
            Assert.Equal(["train", "evaluate", "register", "package", "deploy", "inference", "inference", "cleanup"], jobs.Select(parts => parts[1]).ToList());
            // The components' needs, as expanded.
            Assert.Contains(jobs, parts => parts[0] == "register-model" && parts[^1] == "[train,evaluate]");

            // The drift check runs only in scheduled pipelines.
            Assert.DoesNotContain("retrain-trigger", listed);
            Assert.Contains("retrain-trigger", await ListAsync(root, "--variable", "CI_PIPELINE_SOURCE=schedule"));

            // The training job as GitLab would run it: the component's variables, and the trainer's merged in.
            var expanded = await File.ReadAllTextAsync(Path.Combine(root, ".gitlab-ci-local", "expanded-gitlab-ci.yml"), TestContext.Current.CancellationToken);
            var train = expanded[expanded.IndexOf("\ntrain:", StringComparison.Ordinal)..];
            train = train[..train.IndexOf("\nevaluate:", StringComparison.Ordinal)];
            foreach (var expected in new[] { "CHECKPOINTS: 'on'", "CHECKPOINT_RUN_KEY: digits-cnn", "GPU_COUNT: '1'", "DATASETS: s3://datasets/digits/ -> /data/digits", "EPOCHS: '8'", "- runner_system_failure", "- stuck_or_timeout_failure" })
                Assert.Contains(expected, train);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
