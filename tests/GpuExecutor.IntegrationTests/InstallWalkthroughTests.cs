using GpuExecutor.AdminLog;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// The README's install section, taken as a new user would on this machine: install the package
/// (for real, with dpkg), add a store section to the installed config (the only edit), run
/// `register`, run `doctor`, and get a job through the simulator with nothing else set up.
///
/// It changes the machine while it runs, and puts it back: the package is purged at the end, the
/// files the job left under /var/lib/gpu-executor are removed, and where no Docker daemon
/// listens on the default socket (/var/run/docker.sock), the test bed's is linked there for the
/// test's length, as a freshly installed docker.io would listen there. It runs only as root, and
/// skips (saying why) on a machine where gpu-executor is installed or configured already.
/// GitLab Runner cannot be installed here: a stand-in writes the runner config that
/// `gitlab-runner register --template-config` would write from register's template.
/// </summary>
public sealed class InstallWalkthroughTests
{
    private const string DefaultSocket = "/var/run/docker.sock";
    private const string StateDir = "/var/lib/gpu-executor";

    [Fact]
    public async Task Install_register_doctor_then_a_job_runs_through_the_simulator_with_only_the_store_section_edited()
    {
        PackageTests.RequirePackage();
        Testbed.Require();
        if (Environment.UserName != "root")
            Assert.Skip("installs the package into this machine: needs root");
        if (Directory.Exists("/etc/gpu-executor") || File.Exists("/usr/bin/gpu-executor"))
            Assert.Skip("gpu-executor is already installed or configured on this machine; the walkthrough would change it");
        if (File.Exists(DefaultSocket) || Directory.Exists(DefaultSocket) || new FileInfo(DefaultSocket).LinkTarget is not null)
            Assert.Skip($"something is at {DefaultSocket} already; the walkthrough needs the test bed's daemon there");

        var work = Directory.CreateTempSubdirectory("gpu-executor-walkthrough").FullName;
        var stateBefore = Directory.Exists(StateDir) ? Directory.GetFileSystemEntries(StateDir).ToHashSet() : null;
        File.CreateSymbolicLink(DefaultSocket, new Uri(Testbed.DockerHost).LocalPath);
        try
        {
            // 1. Install the package.
            var (installed, installOutput, installErrors) = await Testbed.RunAsync("dpkg", ["--install", PackageTests.Package], null, work);
            Assert.True(installed == 0, installOutput + installErrors);

            // The one edit: a store for the job's dataset.
            var bucket = $"walkthrough-{Guid.NewGuid():N}"[..24];
            using (var client = S3Testbed.Client())
            {
                await S3Testbed.CreateBucketAsync(client, bucket);
                await S3Testbed.PutAsync(client, bucket, "corpus/hello.txt", "hello from the store\n"u8.ToArray());
            }
            File.AppendAllText("/etc/gpu-executor/config.toml", S3Testbed.StoreConfig("s3", S3Testbed.Endpoint, $"\"{bucket}\"") + "\n");

            // 2. Register, with a stand-in for gitlab-runner that writes the runner config the real one would.
            var runnerConfig = Path.Combine(work, "gitlab-runner-config.toml");
            var gitlabRunner = Path.Combine(work, "gitlab-runner");
            File.WriteAllText(gitlabRunner, $$"""
                #!/bin/bash
                # Like gitlab-runner register: the entry from --name, --url, the token and the template.
                while [ $# -gt 0 ]; do case "$1" in --name) name="$2"; shift;; --url) url="$2"; shift;; --template-config) template="$2"; shift;; esac; shift; done
                { echo 'concurrent = 1'; echo; sed "s|^\[\[runners\]\]$|[[runners]]\n  name = \"$name\"\n  url = \"$url\"\n  token = \"$CI_SERVER_TOKEN\"|" "$template"; } > '{{runnerConfig}}'
                echo "Runner registered successfully."
                """.Replace("\r", "", StringComparison.Ordinal));
            File.SetUnixFileMode(gitlabRunner, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var (registered, registerOutput, registerErrors) = await Testbed.RunAsync("/usr/bin/gpu-executor",
                ["register", "--url", "https://gitlab.example.com", "--name", "walkthrough", "--tags", "gpu", "--gitlab-runner", gitlabRunner],
                new Dictionary<string, string?> { ["RUNNER_TOKEN"] = "glrt-walkthrough-0001" }, work);
            Assert.True(registered == 0, registerOutput + registerErrors);
            Assert.Contains("Runner registered successfully.", registerOutput);

            // 3. Doctor. This machine has no NVIDIA GPU or Container Toolkit: those checks fail, and only those.
            var (_, doctor, doctorErrors) = await Testbed.RunAsync("/usr/bin/gpu-executor", ["doctor", "--runner-config", runnerConfig], null, work);
            var failed = doctor.Split('\n').Where(line => line.StartsWith("FAIL ", StringComparison.Ordinal)).Select(line => line[6..].Split("  ")[0].Trim()).ToList();
            Assert.True(failed.All(check => check is "nvidia runtime" or "gpus"), doctor + doctorErrors);
            foreach (var check in new[] { "config", "docker", "store s3", "checkpoint store (local-checkpoints)", "runner walkthrough" })
                Assert.Contains(doctor.Split('\n'), line => line.StartsWith($"PASS  {check} ", StringComparison.Ordinal));

            // A job, through the simulator, with the installed binary and config.
            var job = Path.Combine(work, "job.json");
            File.WriteAllText(job, $$"""
                {"job_id": 97001, "image": "{{Testbed.TestImage}}",
                 "variables": {"DATASETS": "s3://{{bucket}}/corpus/ -> /data/corpus"},
                 "script": ["cat /data/corpus/hello.txt", "echo trained > model.txt"]}
                """);
            var (simulated, log, simulateErrors) = await Testbed.RunAsync("/usr/bin/gpu-executor", ["simulate", job], null, work);
            Assert.True(simulated == 0, log + simulateErrors);
            Assert.Contains("hello from the store", log);
            Assert.Contains(EventLog.ReadAll(StateDir), record => record.Job == 97001 && record.Stage == "build_script" && record.Outcome == "success");
        }
        finally
        {
            File.Delete(DefaultSocket);
            await Testbed.RunAsync("dpkg", ["--purge", "gpu-executor"], null, work);
            if (stateBefore is null)
            {
                if (Directory.Exists(StateDir))
                    Directory.Delete(StateDir, recursive: true);
            }
            else
            {
                foreach (var entry in Directory.GetFileSystemEntries(StateDir).Where(entry => !stateBefore.Contains(entry)))
                {
                    if (Directory.Exists(entry))
                        Directory.Delete(entry, recursive: true);
                    else
                        File.Delete(entry);
                }
            }
            Directory.Delete(work, recursive: true);
        }
        Assert.False(File.Exists("/usr/bin/gpu-executor"));
        Assert.False(Directory.Exists("/etc/gpu-executor"));
    }
}
